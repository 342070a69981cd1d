// Package config loads, validates and watches the proxy's component config file
// (tollgate.dev/v1alpha1 ProxyConfig).
package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

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
	// One validation for the proxy and the operator (which checks every config it renders).
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
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
		{"publicURL", old.PublicURL, next.PublicURL},
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

// MinUserHashKeyBytes is the shortest user-hash key the proxy accepts: a short key can be
// found by trying keys against pseudonyms of known ids, after which every pseudonym can be
// tested against guessed ids again.
const MinUserHashKeyBytes = 16

// ReadUserHashKey reads a user-hash key file (sessionStorage.userHashKeyFile): its content,
// without a trailing newline (an editor's or `echo`'s), is the key. The proxy, and `proxy
// pseudonym` that computes a user's pseudonym for erasure, read it with this one function.
func ReadUserHashKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sessionStorage.userHashKeyFile: %w", err)
	}
	key := bytes.TrimRight(b, "\r\n")
	if len(key) < MinUserHashKeyBytes {
		return nil, fmt.Errorf("sessionStorage.userHashKeyFile %s: %d bytes, want at least %d (the operator generates 64 hex digits: 256 bits)", path, len(key), MinUserHashKeyBytes)
	}
	return key, nil
}
