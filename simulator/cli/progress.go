package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressMin is the fewest events a run needs for its progress to be shown.
const progressMin = 100_000

// progress shows how far long runs are, on standard error, only when it is a terminal: a
// single line, rewritten at most a few times a second, cleared at the end.
type progress struct {
	w     io.Writer // nil: show nothing
	mu    sync.Mutex
	last  time.Time
	shown bool
}

func newProgress(stderr io.Writer) *progress {
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &progress{w: stderr}
	}
	return &progress{}
}

// of returns the progress function of one run, nil when nothing is to be shown.
func (p *progress) of(name string, total int) func(done, total int) {
	if p.w == nil || total < progressMin {
		return nil
	}
	return func(done, total int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if now := time.Now(); done < total && now.Sub(p.last) >= 200*time.Millisecond {
			p.last, p.shown = now, true
			_, _ = fmt.Fprintf(p.w, "\r\033[K%s: %d/%d decisions (%d%%)", name, done, total, done*100/max(total, 1))
		}
	}
}

// done clears the progress line.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		_, _ = fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}
