package store

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// combiner shares Redis round trips between concurrent script calls, without a goroutine of
// its own. A call made while fewer than maxInFlight round trips are out goes at once, on the
// caller's goroutine, exactly as on a plain client: under light load nothing changes. A call
// made while maxInFlight are out waits in a queue; when a round trip ends, the first waiting
// call is woken to send every queued call (up to maxBatch) as one pipeline, and wakes the
// others with their replies. Each call is still one command, sent once. A queued caller whose
// context ends leaves at once, and its call is never sent.
//
// go-redis's autopipeliner does the same with flusher and dispatch goroutines: measured here
// (docs/benchmarks.md) it saved as much under load, but every call then paid two goroutine
// hand-offs, a quarter of a millisecond on an idle VM.
type combiner struct {
	client      redis.UniversalClient
	maxInFlight int // round trips out at once before calls queue
	maxBatch    int // calls in one pipeline

	mu       sync.Mutex
	inFlight int
	queue    []*call
}

// call is one queued command. wake is signalled once: with the reply set, or with lead set
// when the call is to send the batch itself.
type call struct {
	ctx   context.Context
	cmd   redis.Cmder
	wake  chan struct{}
	lead  []*call
	state atomic.Int32 // queued, taken (into a batch) or abandoned (its caller gave up)
}

const (
	queued int32 = iota
	taken
	abandoned
)

func newCombiner(client redis.UniversalClient) *combiner {
	return &combiner{client: client, maxInFlight: 2, maxBatch: 128}
}

// process runs cmd and returns when its reply (or error) is set.
func (p *combiner) process(ctx context.Context, cmd redis.Cmder) {
	p.mu.Lock()
	if p.inFlight < p.maxInFlight {
		p.inFlight++
		p.mu.Unlock()
		defer p.handOff() // also when the client panics
		_ = p.client.Process(ctx, cmd)
		return
	}
	c := &call{ctx: ctx, cmd: cmd, wake: make(chan struct{}, 1)}
	p.queue = append(p.queue, c)
	p.mu.Unlock()
	select {
	case <-c.wake:
	case <-ctx.Done():
		if c.state.CompareAndSwap(queued, abandoned) { // never sent: the queue skips it
			cmd.SetErr(ctx.Err())
			return
		}
		<-c.wake // already in a batch: it ends within the client's timeouts
	}
	if c.lead != nil {
		p.send(c.lead, c)
	}
}

// send runs a batch taken from the queue as one round trip (self among it: the caller),
// wakes the others, then hands the round trip it held to the queue.
func (p *combiner) send(batch []*call, self *call) {
	defer func() { // also when the client panics: no caller may wait forever
		for _, c := range batch {
			if c != self {
				c.wake <- struct{}{}
			}
		}
		p.handOff()
	}()
	if len(batch) == 1 {
		_ = p.client.Process(self.ctx, self.cmd)
		return
	}
	// The batch's own timeouts are the client's (Timeout): the callers' contexts differ.
	pipe := p.client.Pipeline()
	for _, c := range batch {
		_ = pipe.Process(context.Background(), c.cmd)
	}
	_, _ = pipe.Exec(context.Background())
}

// handOff gives the round trip just finished to the queued calls (those whose callers still
// wait), or frees it.
func (p *combiner) handOff() {
	p.mu.Lock()
	var batch []*call
	for len(p.queue) > 0 && len(batch) < p.maxBatch {
		c := p.queue[0]
		p.queue = p.queue[1:]
		if c.state.CompareAndSwap(queued, taken) {
			batch = append(batch, c)
		}
	}
	if len(p.queue) == 0 {
		p.queue = nil // do not keep a long queue's array
	}
	if len(batch) == 0 {
		p.inFlight--
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	batch[0].lead = batch
	batch[0].wake <- struct{}{}
}
