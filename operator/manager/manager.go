// Package manager wires the operator: scheme, cache, leader election, the MCPServer controller
// and health checks. The operator binary and the integration tests build the manager here, so
// that the tests run exactly what ships.
package manager

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/controller"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// LeaderElectionID names the lease the replicas compete for.
const LeaderElectionID = "tollgate-operator.tollgate.dev"

// Options are the operator's settings (its flags).
type Options struct {
	MetricsAddr string // "0" turns metrics off
	ProbeAddr   string // "" or "0" turns the probes off
	ProxyImage  string

	LeaderElect bool
	// LeaderElectionNamespace holds the lease; required outside a cluster (inside one, the
	// pod's own namespace).
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election; zero: the defaults
	// of controller-runtime (15 s, 10 s, 2 s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// NewClient wraps the manager's client (tests count writes); nil: controller-runtime's.
	NewClient client.NewClientFunc
	// SkipNameValidation lets one process run several managers (tests).
	SkipNameValidation bool
}

// NewScheme knows the built-in types and api/v1alpha1.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// CacheOptions keep the cache to what the operator needs: the objects it manages (selected by
// the label it sets) and MCPServers, without managed fields. ConfigMaps and Secrets are never
// cached whole (ClientOptions): the operator watches their metadata only — its own ConfigMap's
// and the referenced ones' — and reads a ConfigMap's data from the API server when it
// reconciles a server that uses it. So unrelated ConfigMaps and Secrets, however many and
// large, cost the operator their metadata alone.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{render.ManagedByLabel: render.FieldManager})}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Service{}:             managed,
			&appsv1.Deployment{}:          managed,
			&networkingv1.NetworkPolicy{}: managed,
		},
	}
}

// ClientOptions make the manager's client read ConfigMaps and Secrets from the API server,
// never through a cache (which would list and hold every one in the cluster).
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}}}}
}

// New builds the manager with the MCPServer controller registered.
func New(ctx context.Context, cfg *rest.Config, o Options) (ctrl.Manager, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	mo := ctrl.Options{
		Scheme:                        scheme,
		Cache:                         CacheOptions(),
		Client:                        ClientOptions(),
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:        o.ProbeAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true, // a stopping leader hands over at once, not after the lease expires
		NewClient:                     o.NewClient,
	}
	if o.MetricsAddr == "" {
		mo.Metrics.BindAddress = "0"
	}
	if o.ProbeAddr == "0" {
		mo.HealthProbeBindAddress = ""
	}
	for _, d := range []struct {
		set time.Duration
		p   **time.Duration
	}{{o.LeaseDuration, &mo.LeaseDuration}, {o.RenewDeadline, &mo.RenewDeadline}, {o.RetryPeriod, &mo.RetryPeriod}} {
		if d.set > 0 {
			v := d.set
			*d.p = &v
		}
	}
	if o.SkipNameValidation {
		skip := true
		mo.Controller = config.Controller{SkipNameValidation: &skip}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	r := &controller.Reconciler{
		Client:     mgr.GetClient(),
		Scheme:     scheme,
		Recorder:   mgr.GetEventRecorder(render.FieldManager),
		ProxyImage: o.ProxyImage,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("setting up the controller: %w", err)
	}
	if mo.HealthProbeBindAddress != "" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}
