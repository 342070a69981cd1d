package store

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// combiner shares Redis round trips between concurrent script calls, without a goroutine of
// its own. A call made while fewer than maxInFlight round trips are out goes at once, on the
// caller's goroutine, exactly as on a plain client: under light load nothing changes. A call
// made while maxInFlight are out waits in a queue; when a round trip ends, the first waiting
// call is woken to send every queued call (up to maxBatch) as one pipeline, and wakes the
// others with their replies. Each call is still one command, sent once.
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
	ctx  context.Context
	cmd  redis.Cmder
	wake chan struct{}
	lead []*call
}

func newCombiner(client redis.UniversalClient) *combiner {
	return &combiner{client: client, maxInFlight: 2, maxBatch: 128}
}

// process runs cmd and returns when its reply (or error) is set.
func (p *combiner) process(ctx context.Context, cmd redis.Cmder) {
	p.mu.Lock()
	if p.inFlight < p.maxInFlight {
		p.inFlight++
		p.mu.Unlock()
		self := &call{ctx: ctx, cmd: cmd}
		p.send([]*call{self}, self)
		return
	}
	c := &call{ctx: ctx, cmd: cmd, wake: make(chan struct{}, 1)}
	p.queue = append(p.queue, c)
	p.mu.Unlock()
	// No early return on ctx: a queued call may be handed a batch to send. The wait is
	// bounded by the client's timeouts (each round trip ahead ends within them).
	<-c.wake
	if c.lead != nil {
		p.send(c.lead, c)
	}
}

// send runs batch as one round trip (self among it: the caller), wakes the others, then
// hands the round trip it held to the queue.
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

// handOff gives the round trip just finished to the queued calls, or frees it.
func (p *combiner) handOff() {
	p.mu.Lock()
	if len(p.queue) == 0 {
		p.inFlight--
		p.mu.Unlock()
		return
	}
	n := min(len(p.queue), p.maxBatch)
	batch := p.queue[:n:n]
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil // do not keep a long queue's array
	}
	p.mu.Unlock()
	batch[0].lead = batch
	batch[0].wake <- struct{}{}
}
