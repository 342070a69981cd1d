package manager_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/operator/manager"
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard()) // a cut-off leader logs its failures; the test measures them
	os.Exit(envtest.Main(m))
}

// replica is one operator process: a manager and what stops it.
type replica struct {
	mgr    ctrl.Manager
	cancel context.CancelFunc // what SIGTERM does to the binary (signal.NotifyContext in main)
	done   chan struct{}      // closed when Start has returned
	err    error              // Start's result, once done is closed
	cut    *atomic.Bool       // when set, every request fails: the process is gone
	gets   *atomic.Int64      // the lease reads it sent: its election attempts
}

// startReplica starts manager.New with leader election on cfg, as the binary does.
func startReplica(t *testing.T, cfg *rest.Config, o manager.Options) *replica {
	t.Helper()
	r := &replica{done: make(chan struct{}), cut: new(atomic.Bool), gets: new(atomic.Int64)}
	cfg = rest.CopyConfig(cfg)
	leasePath := "/leases/" + manager.LeaderElectionID
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if r.cut.Load() {
				return nil, errors.New("simulated crash: the process is gone")
			}
			if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, leasePath) {
				r.gets.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	o.MetricsAddr, o.ProbeAddr, o.ProxyImage = "0", "0", "proxy:test"
	o.SkipNameValidation = true // two managers in one process
	o.LeaderElect = true
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := manager.New(ctx, cfg, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r.mgr, r.cancel = mgr, cancel
	go func() {
		r.err = mgr.Start(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Errorf("a manager did not stop within a minute of its cancel")
		}
	})
	return r
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFailover measures the time from a leader's shutdown to a standby leading: two
// replicas with --leader-elect on one control plane, as the operator's ServiceAccount under
// the shipped role. The standby retries every RetryPeriod, jittered up to 2.2 times that
// (client-go's wait.JitterUntil with factor 1.2). A leader that releases the lease as it stops
// (LeaderElectionReleaseOnCancel, manager.New) is succeeded at the standby's next retry; one
// that vanishes without releasing (SIGKILL, a lost node, or a SIGTERM before the fix) only
// once the lease expires, LeaseDuration after the standby last saw it renewed: the 20 s of the
// field trial with the default timings. The crashed case shows the measurement tells the two
// apart.
func TestFailover(t *testing.T) {
	env := envtest.Shared(t)
	cases := map[string]struct {
		reason               string
		lease, renew, retry  time.Duration // zero: controller-runtime's defaults
		crash                bool          // the leader vanishes without releasing the lease
		wantWithinNextRetry  bool          // the standby leads by its next retry
		wantAtLeastLeaseLeft bool          // the standby waits for the lease to expire
	}{
		"ShortTimings": {
			reason: "With 4s/3s/500ms, a cancelled leader hands over by the standby's next retry, well within the lease.",
			lease:  4 * time.Second, renew: 3 * time.Second, retry: 500 * time.Millisecond,
			wantWithinNextRetry: true,
		},
		"DefaultTimings": {
			reason:              "With controller-runtime's defaults (15s/10s/2s), a cancelled leader hands over by the standby's next retry, not after 15 s.",
			wantWithinNextRetry: true,
		},
		"ShortTimingsLeaderCrashed": {
			reason: "A leader that vanishes without releasing keeps the standby waiting for the lease to expire: the release is what makes failover fast.",
			lease:  4 * time.Second, renew: 3 * time.Second, retry: 500 * time.Millisecond,
			crash:                true,
			wantAtLeastLeaseLeft: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			lease, retry := tc.lease, tc.retry
			if lease == 0 {
				lease, retry = 15*time.Second, 2*time.Second // controller-runtime's defaults
			}
			ns := env.Namespace(t)
			cfg := env.AsOperator(t)
			o := manager.Options{LeaderElectionNamespace: ns, LeaseDuration: tc.lease, RenewDeadline: tc.renew, RetryPeriod: tc.retry}

			leader := startReplica(t, cfg, o)
			select {
			case <-leader.mgr.Elected():
			case <-time.After(30 * time.Second):
				t.Fatal("the first replica did not lead within 30 s")
			}
			standby := startReplica(t, cfg, o)
			// The standby has tried, found the lease held, and is retrying: the state of a
			// standby that has been running for a while.
			waitFor(t, "the standby's first election attempt", 30*time.Second, func() bool { return standby.gets.Load() > 0 })
			select {
			case <-standby.mgr.Elected():
				t.Fatal("the standby leads while the leader holds the lease")
			default:
			}

			began := time.Now()
			if tc.crash {
				leader.cut.Store(true) // no request gets out, the release neither
			}
			leader.cancel()
			// When the leader's Start returns, measured apart from the failover.
			stopped := make(chan time.Duration, 1)
			go func() {
				<-leader.done
				stopped <- time.Since(began)
			}()
			limit := lease + 3*retry + 30*time.Second
			select {
			case <-standby.mgr.Elected():
			case <-time.After(limit):
				t.Fatalf("the standby did not lead within %v of the leader's shutdown", limit)
			}
			failover := time.Since(began)
			var leaderStopped time.Duration
			select {
			case leaderStopped = <-stopped:
				if leader.err != nil && !tc.crash {
					t.Errorf("the leader's Start: %v", leader.err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the leader did not stop within a minute of its cancel")
			}

			// 2.2 retry periods is the standby's longest wait between attempts; a second more
			// covers the leader's stop and the requests on a loaded machine.
			nextRetry := retry*22/10 + time.Second
			t.Logf("lease %v, retry %v, leader crashed: %v: the standby leads %v after the leader's shutdown began (its Start returned after %v; bound for a released lease %v)",
				lease, retry, tc.crash, failover.Round(time.Millisecond), leaderStopped.Round(time.Millisecond), nextRetry)
			if tc.wantWithinNextRetry && (failover > nextRetry || failover >= lease) {
				t.Errorf("%s\nfailover took %v, want at most %v (and well below the %v lease)", tc.reason, failover, nextRetry, lease)
			}
			// The standby last saw a renewal at most one jittered retry before the crash; the
			// lease then runs LeaseDuration from that moment.
			if minWait := lease - retry*22/10; tc.wantAtLeastLeaseLeft && failover < minWait {
				t.Errorf("%s\nfailover took %v, want at least %v (the lease expiring)", tc.reason, failover, minWait)
			}
		})
	}
}
