// Package config loads, validates and watches the proxy's component config file
// (tollgate.dev/v1alpha1 ProxyConfig).
package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/route"
)

// DefaultMaxBodyBytes bounds a POST body on the MCP endpoint when the config does not.
const DefaultMaxBodyBytes = 1 << 20

// Load reads, defaults and validates a ProxyConfig file.
func Load(path string) (*v1alpha1.ProxyConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a ProxyConfig strictly (an unknown field is an error, as with kubectl),
// applies defaults and validates it.
func Parse(data []byte) (*v1alpha1.ProxyConfig, error) {
	var c v1alpha1.ProxyConfig
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("decoding ProxyConfig: %w", err)
	}
	Default(&c)
	if err := Validate(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Default fills in defaults.
func Default(c *v1alpha1.ProxyConfig) {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Upstream.ResponseHeaderTimeout == nil {
		c.Upstream.ResponseHeaderTimeout = &metav1.Duration{Duration: v1alpha1.DefaultResponseHeaderTimeout}
	}
	for i := range c.Upstream.PassthroughPaths {
		if c.Upstream.PassthroughPaths[i].PathType == "" {
			c.Upstream.PassthroughPaths[i].PathType = v1alpha1.PathTypeExact
		}
	}
	if c.HTTP == nil {
		c.HTTP = &v1alpha1.HTTPServerConfig{}
	}
	h := c.HTTP
	for _, d := range []struct {
		p   **metav1.Duration
		def time.Duration
	}{
		{&h.ReadHeaderTimeout, v1alpha1.DefaultReadHeaderTimeout},
		{&h.BodyReadTimeout, v1alpha1.DefaultBodyReadTimeout},
		{&h.IdleTimeout, v1alpha1.DefaultIdleTimeout},
	} {
		if *d.p == nil {
			*d.p = &metav1.Duration{Duration: d.def}
		}
	}
	if h.MaxConnections == 0 {
		h.MaxConnections = v1alpha1.DefaultMaxConnections
	}
	if h.MaxBufferedBytes == 0 {
		h.MaxBufferedBytes = v1alpha1.DefaultMaxBufferedBytes
	}
	if h.MaxBufferedBytesPerCaller == 0 {
		h.MaxBufferedBytesPerCaller = v1alpha1.DefaultMaxBufferedPerCaller
	}
	if h.MaxStreams == 0 {
		h.MaxStreams = v1alpha1.DefaultMaxStreams
	}
	if h.MaxStreamsPerCaller == 0 {
		h.MaxStreamsPerCaller = v1alpha1.DefaultMaxStreamsPerCaller
	}
	if c.SessionStorage != nil && c.SessionStorage.KeyPrefix == "" {
		c.SessionStorage.KeyPrefix = v1alpha1.DefaultKeyPrefix
	}
	if rl := c.RateLimiting; rl != nil {
		if rl.FailurePolicy == "" {
			rl.FailurePolicy = v1alpha1.FailurePolicyAllow
		}
		if rl.Mode == "" {
			rl.Mode = v1alpha1.RateLimitModeEnforce
		}
	}
}

// Validate checks a defaulted ProxyConfig; every error names its field.
func Validate(c *v1alpha1.ProxyConfig) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.APIVersion != v1alpha1.GroupVersion.String() || c.Kind != v1alpha1.ProxyConfigKind {
		add("apiVersion/kind", "must be %s %s, got %q %q", v1alpha1.GroupVersion, v1alpha1.ProxyConfigKind, c.APIVersion, c.Kind)
	}
	if msgs := validation.IsDNS1123Label(c.Server.Namespace); len(msgs) > 0 {
		add("server.namespace", "%q: %s", c.Server.Namespace, msgs[0])
	}
	if msgs := validation.IsDNS1123Subdomain(c.Server.Name); len(msgs) > 0 {
		add("server.name", "%q: %s", c.Server.Name, msgs[0])
	}
	if u, err := url.Parse(c.Upstream.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("upstream.url", "%q: must be an absolute http or https URL", c.Upstream.URL)
	} else if _, err := route.New(u.EscapedPath(), c.Upstream.LegacySSEPaths, nil); err != nil {
		add("upstream", "%v", err)
	}
	if err := c.Upstream.Validate("upstream"); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate("http"); err != nil {
		errs = append(errs, err)
	}
	if h := c.HTTP; h != nil && h.MaxBufferedBytesPerCaller > 0 && h.MaxBufferedBytesPerCaller < c.MaxBodyBytes {
		add("maxBodyBytes", "%d: must be at most http.maxBufferedBytesPerCaller (%d), or no body of that size could be read", c.MaxBodyBytes, h.MaxBufferedBytesPerCaller)
	}
	n := 0
	for _, set := range []bool{c.Auth.Header != nil, c.Auth.OIDC != nil, c.Auth.Anonymous != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		add("auth", "set exactly one of header, oidc and anonymous (%d set)", n)
	}
	if err := c.RateLimiting.Validate(); err != nil {
		add("rateLimiting", "%v", err)
	}
	if c.Auth.Anonymous != nil && c.RateLimiting.HasPerUser() {
		add("rateLimiting", "perUser buckets need a caller identity: auth.anonymous has none (use auth.header or auth.oidc)")
	}
	if s := c.SessionStorage; s != nil {
		switch s.Provider {
		case v1alpha1.SessionStorageMemory:
		case v1alpha1.SessionStorageRedis:
			if s.Address == "" && len(s.Addresses) == 0 {
				add("sessionStorage", "provider redis requires address or addresses")
			}
		default:
			add("sessionStorage.provider", "%q: must be redis or memory", s.Provider)
		}
		if s.Timeout != nil && s.Timeout.Duration <= 0 {
			add("sessionStorage.timeout", "must be greater than 0")
		}
	}
	if r := c.Responses; r != nil && r.RejectStatus != 0 && r.RejectStatus != 429 && r.RejectStatus != 200 {
		add("responses.rejectStatus", "%d: must be 429 or 200", r.RejectStatus)
	}
	if c.MaxBodyBytes < 1 {
		add("maxBodyBytes", "must be at least 1")
	}
	return errors.Join(errs...)
}

// RestartNeeded names the fields whose change the running proxy cannot apply by reloading:
// its listeners, upstream, identity and store are built once, and the server identity, key
// prefix, user-hash key and store name every bucket (applied live, a change would move every
// bucket to new, full keys: an exhausted user would get a full bucket). A reload that changes
// any of them is refused as a whole and the running config stays. Rate limits, responses and
// the body limit reload in place (a pod roll would cut every open SSE stream).
func RestartNeeded(old, next *v1alpha1.ProxyConfig) []string {
	var fields []string
	for _, f := range []struct {
		name      string
		old, next any
	}{
		{"server", old.Server, next.Server},
		{"upstream", old.Upstream, next.Upstream},
		{"auth", old.Auth, next.Auth},
		{"sessionStorage", old.SessionStorage, next.SessionStorage},
		{"http", old.HTTP, next.HTTP},
	} {
		if !reflect.DeepEqual(f.old, f.next) {
			fields = append(fields, f.name)
		}
	}
	return fields
}

// Watch polls path every interval and calls apply with each new valid config. A file that
// does not parse or validate is reported to onError and the running config stays. Polling
// the content (not inotify) follows a Kubernetes ConfigMap volume's symlink swap.
func Watch(ctx context.Context, path string, interval time.Duration, apply func(*v1alpha1.ProxyConfig), onError func(error)) {
	var last [sha256.Size]byte
	if data, err := os.ReadFile(path); err == nil {
		last = sha256.Sum256(data)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			onError(fmt.Errorf("reading config: %w", err))
			continue
		}
		sum := sha256.Sum256(data)
		if bytes.Equal(sum[:], last[:]) {
			continue
		}
		last = sum
		c, err := Parse(data)
		if err != nil {
			onError(fmt.Errorf("%s: %w (keeping the running config)", path, err))
			continue
		}
		apply(c)
	}
}
