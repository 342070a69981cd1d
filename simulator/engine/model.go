package engine

import (
	"context"
	"iter"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// replayModel replays events with the reference model (package model) deciding instead of
// the limiter on miniredis: the --engine model fast path for big traces. It makes the
// decisions the limiter makes (the referenceModel property and TestEnginesAgree hold the
// two to it), but there is no Redis: no script calls, no keys, no peeks. Replicas share one
// Redis, so they share the model's buckets too; calls are still dealt to them in turn.
func replayModel(ctx context.Context, opts Options, events iter.Seq[traffic.Event], observe Observer) (*Result, error) {
	replicas := max(opts.Replicas, 1)
	m := model.New(opts.Config)
	i := 0
	for ev := range events {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if opts.Progress != nil {
				opts.Progress(i, opts.Total)
			}
		}
		at := ev.At.Microseconds()
		v, uses := m.DecideUses(at, ev.User, ev.Tier, ev.Calls)
		out := modelOutcome(opts, ev, v, uses)
		out.Replica = i % replicas
		observe(i, ev, out)
		m.Sweep(at)
		i++
	}
	if opts.Progress != nil {
		opts.Progress(i, opts.Total)
	}
	return &Result{Events: i}, nil
}

// modelOutcome is the model's verdict in the limiter's terms.
func modelOutcome(opts Options, ev traffic.Event, v model.Verdict, uses []model.Use) Outcome {
	out := Outcome{RetryAfter: v.RetryAfter}
	out.Outcome = v.Outcome.Under(opts.Config)
	out.Allowed, out.Invalid = v.Outcome == ratelimit.OutcomeAllowed, v.Outcome == ratelimit.OutcomeInvalid
	if len(v.Buckets) == 0 {
		return out
	}
	out.Time = opts.Epoch.Add(ev.At)
	out.Buckets = make([]ratelimit.BucketState, len(v.Buckets))
	var longest time.Duration
	for k, s := range v.Buckets {
		out.Buckets[k] = ratelimit.BucketState{
			BucketID: s.ID, MaxTokens: int32(uses[k].MaxTokens), RefillPeriod: time.Duration(uses[k].PeriodUS) * time.Microsecond,
			Cost: s.Cost, Remaining: s.Remaining, Reset: s.Reset, Wait: s.Wait,
		}
		// The limiter's Rejected: the short bucket with the largest wait, the first of equals.
		if st := &out.Buckets[k]; v.Outcome == ratelimit.OutcomeRejected && st.Wait > 0 && st.Wait > longest {
			id := st.BucketID
			out.Rejected, longest = &id, st.Wait
		}
	}
	return out
}
