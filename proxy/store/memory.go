package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// memory is the embedded store's server and its expiry sweeper (see the package
// documentation: "The memory store").
type memory struct {
	srv *miniredis.Miniredis
	now func() time.Time // time.Now; tests drive sweeps with their own clock

	// Script calls hold sweepMu shared, a sweep holds it exclusively: no key is written
	// while a sweep adjusts TTLs.
	sweepMu sync.RWMutex
	touchMu sync.Mutex
	touched map[string]time.Time // keys named by script calls since the last sweep: when the call returned
	last    time.Time            // the last sweep

	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

func openMemory(ctx context.Context, opt Options) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory store: %w", err)
	}
	// A random password keeps other processes that can reach the loopback port away from
	// the buckets.
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("memory store: %w", err)
	}
	password := hex.EncodeToString(secret)
	srv := miniredis.NewMiniRedis()
	srv.RequireAuth(password)
	if err := srv.Start(); err != nil { // 127.0.0.1, a free port
		return nil, fmt.Errorf("memory store: %w", err)
	}
	m := &memory{
		srv:     srv,
		now:     time.Now,
		touched: map[string]time.Time{},
		last:    time.Now(),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	o := clientOptions(opt)
	o.Addrs, o.Password = []string{srv.Addr()}, password
	client := redis.NewClient(o.Simple())
	client.AddHook(noRetryHook{})
	s := newStore(client, opt)
	s.mem = m
	go m.run(opt.MemorySweepInterval)
	return s, nil
}

// call runs one script call and records the keys it names.
func (m *memory) call(keys []string, run func()) {
	m.sweepMu.RLock()
	defer m.sweepMu.RUnlock()
	run()
	if len(keys) == 0 {
		return
	}
	t := m.now() // after the call: never before the script wrote
	m.touchMu.Lock()
	for _, k := range keys {
		m.touched[k] = t
	}
	m.touchMu.Unlock()
}

func (m *memory) run(interval time.Duration) {
	defer close(m.stopped)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.sweep()
		}
	}
}

// sweep lets the time since the last sweep pass for every key's TTL, so that expired keys
// go. FastForward takes the same amount off every TTL, which would cut the TTL of a key
// written during the interval by the part of the interval before the write; those keys get
// that part back first. Every key thus loses at most the time since it was written.
func (m *memory) sweep() {
	m.sweepMu.Lock()
	defer m.sweepMu.Unlock()
	now := m.now()
	elapsed := now.Sub(m.last)
	if elapsed <= 0 {
		return
	}
	for k, t := range m.touched {
		if before := t.Sub(m.last); before > 0 {
			if ttl := m.srv.TTL(k); ttl > 0 {
				m.srv.SetTTL(k, ttl+before)
			}
		}
	}
	clear(m.touched)
	m.srv.FastForward(elapsed)
	m.last = now
}

// close stops the sweeper and the server.
func (m *memory) close() {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.stopped
		m.srv.Close()
	})
}
