package enforce

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// DecisionLog writes ratelimit.Records as JSON lines. Safe for concurrent use.
type DecisionLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewDecisionLog writes to w (a file, usually).
func NewDecisionLog(w io.Writer) *DecisionLog { return &DecisionLog{enc: json.NewEncoder(w)} }

// Write appends records, each one line. Errors are returned for the caller to count; a
// failing log never blocks a request.
func (l *DecisionLog) Write(recs []ratelimit.Record) error {
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
