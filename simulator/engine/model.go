package engine

import (
	"context"
	"iter"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
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
	// failurePolicy Local: each replica's local buckets, modelled as the real ones are
	// configured (ratelimit.DividedConfig).
	var locals []*model.Model
	if len(opts.Outages) > 0 && opts.Config != nil && opts.Config.FailurePolicy == v1alpha1.FailurePolicyLocal {
		for range replicas {
			locals = append(locals, model.New(ratelimit.DividedConfig(opts.Config, int32(replicas))))
		}
	}
	i, outage := 0, 0
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
		var out Outcome
		if InOutage(opts.Outages, &outage, ev.At) {
			out = modelDown(opts, m, locals, i%replicas, ev)
		} else {
			v, uses := m.DecideUses(at, ev.User, ev.Tier, ev.Calls)
			out = modelOutcome(opts, ev, v, uses)
		}
		out.Replica = i % replicas
		observe(i, ev, out)
		m.Sweep(at)
		for _, l := range locals {
			l.Sweep(at)
		}
		i++
	}
	if opts.Progress != nil {
		opts.Progress(i, opts.Total)
	}
	return &Result{Events: i}, nil
}

// modelDown decides an event while Redis is down, as the limiter and the failure policy do
// (with no deny cache: the model has none): a call no bucket applies to, an anonymous call a
// per-user bucket applies to and an invalid one are answered without Redis; any other is
// let through (Allow), refused (Deny) or decided by the replica's local buckets (Local).
func modelDown(opts Options, m *model.Model, locals []*model.Model, replica int, ev traffic.Event) Outcome {
	if ev.User == "" && m.PerUserApplies(ev.Calls) {
		return Outcome{Outcome: ratelimit.OutcomeUnidentified}
	}
	uses, invalid := m.Uses(ev.User, ev.Tier, ev.Calls)
	switch {
	case invalid:
		return modelOutcome(opts, ev, model.Verdict{Outcome: ratelimit.OutcomeInvalid}, nil)
	case len(uses) == 0:
		return modelOutcome(opts, ev, model.Verdict{Outcome: ratelimit.OutcomeAllowed}, nil)
	case locals != nil:
		v, u := locals[replica].DecideUses(ev.At.Microseconds(), ev.User, ev.Tier, ev.Calls)
		out := modelOutcome(opts, ev, v, u)
		out.Outcome, out.Degraded = out.Outcome.Degraded(), true
		return out
	case opts.Config.FailurePolicy == v1alpha1.FailurePolicyDeny:
		return Outcome{Outcome: ratelimit.OutcomeFailClosed}
	}
	return Outcome{Outcome: ratelimit.OutcomeFailOpen}
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
