package traffic

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
)

// Trace is a decision log read for replay.
type Trace struct {
	Events  []Event
	Epoch   time.Time     // the earliest record's time: virtual time zero
	Span    time.Duration // from the earliest to the latest replayed record
	Skipped int           // records of methods the limiter never limits
}

// maxTraceLine bounds one record (a resource URI is at most 2 KiB).
const maxTraceLine = 64 << 10

// ReadTrace reads a decision log. Every call of a limited method is replayed, also those the
// proxy logged as "unlimited" (no bucket matched then; a new config may limit them), with
// the user's pseudonym as the user id: per-user buckets stay per user, and the replay hashes
// nothing it did not read (it needs no key, and never sees an id). Records are ordered by time
// (replicas append concurrently, so a log can be slightly out of order); the records of one
// JSON-RPC batch (consecutive, same time, user, tier and batch size) are replayed as one
// batch. Each call keeps the tier it was recorded in.
// Unknown fields are ignored, so a newer proxy's log still replays.
func ReadTrace(path string) (*Trace, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &scenario.Error{File: path, Msg: err.Error()}
	}
	type line struct {
		rec ratelimit.Record
		n   int
	}
	var recs []line
	tr := &Trace{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxTraceLine)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var r ratelimit.Record
		if err := json.Unmarshal(text, &r); err != nil {
			return nil, &scenario.Error{File: path, Line: n, Column: 1, Msg: "not a decision-log record: " + err.Error()}
		}
		switch {
		case r.Time.IsZero():
			return nil, &scenario.Error{File: path, Line: n, Column: 1, Field: "time", Msg: "required"}
		case r.Method == "":
			return nil, &scenario.Error{File: path, Line: n, Column: 1, Field: "method", Msg: "required"}
		case r.Cost < 0:
			return nil, &scenario.Error{File: path, Line: n, Column: 1, Field: "cost", Msg: "must not be negative"}
		}
		if !ratelimit.IsLimited(r.Method) {
			tr.Skipped++
			continue
		}
		recs = append(recs, line{r, n})
	}
	if err := sc.Err(); err != nil {
		msg := err.Error()
		if errors.Is(err, bufio.ErrTooLong) {
			msg = fmt.Sprintf("a line longer than %d bytes", maxTraceLine)
		}
		return nil, &scenario.Error{File: path, Msg: msg}
	}
	if len(recs) == 0 {
		return tr, nil
	}
	slices.SortStableFunc(recs, func(a, b line) int { return a.rec.Time.Compare(b.rec.Time) })
	tr.Epoch = recs[0].rec.Time
	for i := 0; i < len(recs); {
		r := recs[i].rec
		e := Event{At: r.Time.Sub(tr.Epoch).Truncate(time.Microsecond), User: r.User, Tier: r.Tier, Source: SourceTrace, Recorded: r.Decision}
		e.Calls = append(e.Calls, call(r))
		i++
		for r.Batch > 0 && i < len(recs) && len(e.Calls) < r.Batch {
			next := recs[i].rec
			if !next.Time.Equal(r.Time) || next.User != r.User || next.Tier != r.Tier || next.Batch != r.Batch {
				break
			}
			e.Calls = append(e.Calls, call(next))
			i++
		}
		tr.Events = append(tr.Events, e)
	}
	tr.Span = recs[len(recs)-1].rec.Time.Sub(tr.Epoch)
	return tr, nil
}

func call(r ratelimit.Record) Call { return Call{Method: r.Method, Name: r.Name, Cost: max(r.Cost, 1)} }
