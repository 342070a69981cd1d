package enforce

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Record is one line of the decision log: one JSON-RPC call on the MCP endpoint. It is the
// trace format the simulator replays, so every call is logged, also those no bucket matched
// (a what-if with a new limit must see them).
type Record struct {
	// Time is Redis's clock at the decision when the limiter decided, else the proxy's.
	Time time.Time `json:"time"`
	// Method and Name (tool or prompt name, resource URI) of the call.
	Method string `json:"method"`
	Name   string `json:"name,omitempty"`
	// NameTruncated marks a name cut to its first 8 KiB.
	NameTruncated bool `json:"nameTruncated,omitempty"`
	// User is the keyed hash of the caller's id (ratelimit.HashUser): the same on every
	// replica that shares the key, never the id itself. Empty for anonymous callers.
	User string `json:"user,omitempty"`
	// Cost is the tokens the call asked (before the entry's weight).
	Cost int32 `json:"cost"`
	// Decision is one of the Outcome* values, or "unlimited" for a call no limit applies to.
	Decision string `json:"decision"`
	// Limit names the bucket that rejected, as in the RateLimit-Policy header.
	Limit string `json:"limit,omitempty"`
	// RetryAfterMs is the exact wait the limiter computed, for rejections.
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
	// Batch is the size of the JSON-RPC batch the call came in, 0 when alone.
	Batch int `json:"batch,omitempty"`
}

// DecisionUnlimited is the decision of a call that no rate limit applies to.
const DecisionUnlimited = "unlimited"

// DecisionLog writes Records as JSON lines. Safe for concurrent use.
type DecisionLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewDecisionLog writes to w (a file, usually).
func NewDecisionLog(w io.Writer) *DecisionLog { return &DecisionLog{enc: json.NewEncoder(w)} }

// Write appends records, each one line. Errors are returned for the caller to count; a
// failing log never blocks a request.
func (l *DecisionLog) Write(recs []Record) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range recs {
		if err := l.enc.Encode(&recs[i]); err != nil {
			return err
		}
	}
	return nil
}
