package store

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

const urlForms = "redis://, rediss://, redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel:// or memory://"

// parseURL reads the --redis URL. Errors name the part at fault and never repeat the URL,
// which may hold a password. Of cfg only the tls block is used, for rediss URLs.
func parseURL(raw string, cfg *v1alpha1.ProxySessionStorage) (*target, error) {
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("redis URL: no scheme: want %s", urlForms)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, password included
		}
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	base, variant, _ := strings.Cut(u.Scheme, "+")
	if base == "memory" && variant == "" {
		if u.User != nil || u.Host != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, errors.New("redis URL: memory:// takes no user, host, path or query")
		}
		return &target{kind: kindMemory}, nil
	}
	if (base != "redis" && base != "rediss") || (variant != "" && variant != "cluster" && variant != "sentinel") {
		return nil, fmt.Errorf("redis URL scheme %q: want %s", u.Scheme, urlForms)
	}
	if u.Fragment != "" {
		return nil, errors.New("redis URL: a fragment (#…) is not supported")
	}
	query := u.Query()
	for _, k := range slices.Sorted(maps.Keys(query)) {
		if k != "addr" || variant == "" {
			return nil, fmt.Errorf("redis URL query parameter %q: not supported (timeouts, pool size and the breaker "+
				"are the proxy's options, and retries are always off; only redis+cluster and redis+sentinel take addr)", k)
		}
	}

	t := &target{}
	if u.User != nil {
		t.creds.username = u.User.Username()
		t.creds.password, _ = u.User.Password()
	} else {
		t.creds.username, t.creds.password = os.Getenv(EnvUsername), os.Getenv(EnvPassword)
	}
	if base == "rediss" {
		var c *v1alpha1.ProxyRedisTLS
		if cfg != nil {
			c = cfg.TLS
		}
		if t.tls, err = tlsConfig(c); err != nil {
			return nil, err
		}
	}

	switch variant {
	case "":
		if strings.Contains(u.Host, ",") {
			return nil, fmt.Errorf("redis URL host %q: several addresses need redis+cluster:// or redis+sentinel://", u.Host)
		}
		if t.db, err = urlDB(strings.TrimPrefix(u.Path, "/"), u.Path); err != nil {
			return nil, err
		}
		// ParseURL resolves the host (localhost and port 6379 by default). Every query
		// parameter was refused above and the path checked, so it fails only on a scheme.
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("redis URL: %w", err)
		}
		t.kind, t.addrs = kindStandalone, []string{o.Addr}
		return t, nil

	case "cluster":
		addrs, err := urlAddrs(u, query)
		if err != nil {
			return nil, err
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("redis URL path %q: Redis Cluster has only database 0: drop the path", u.Path)
		}
		// go-redis ParseClusterURL takes one host and addr parameters for the others.
		cu := url.URL{Scheme: base, Host: addrs[0], RawQuery: url.Values{"addr": addrs[1:]}.Encode()}
		o, err := redis.ParseClusterURL(cu.String())
		if err != nil {
			return nil, fmt.Errorf("redis URL: %w", err)
		}
		t.kind, t.addrs = kindCluster, o.Addrs
		return t, nil

	default: // sentinel
		addrs, err := urlAddrs(u, query)
		if err != nil {
			return nil, err
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		switch {
		case parts[0] == "":
			return nil, fmt.Errorf("redis URL path: the Sentinel master name is missing: want %s://host:port[,host:port…]/masterName[/db]", u.Scheme)
		case len(parts) > 2:
			return nil, fmt.Errorf("redis URL path %q: want /masterName or /masterName/db", u.Path)
		case len(parts) == 2:
			if t.db, err = urlDB(parts[1], u.Path); err != nil {
				return nil, err
			}
		}
		t.kind, t.addrs, t.masterName = kindSentinel, addrs, parts[0]
		return t, nil
	}
}

// urlAddrs returns the comma-separated hosts of u followed by its addr parameters, each
// checked to be host:port.
func urlAddrs(u *url.URL, query url.Values) ([]string, error) {
	var addrs []string
	if u.Host != "" {
		for _, h := range strings.Split(u.Host, ",") {
			if err := v1alpha1.ValidateAddress(h); err != nil {
				return nil, fmt.Errorf("redis URL host: %w", err)
			}
			addrs = append(addrs, h)
		}
	}
	for _, a := range query["addr"] {
		if err := v1alpha1.ValidateAddress(a); err != nil {
			return nil, fmt.Errorf("redis URL addr parameter: %w", err)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("redis URL host: %s:// needs at least one host:port", u.Scheme)
	}
	return addrs, nil
}

// urlDB reads a database number ("" is 0).
func urlDB(s, path string) (int, error) {
	if s == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 || strings.Contains(s, "/") {
		return 0, fmt.Errorf("redis URL path %q: the database must be a number >= 0", path)
	}
	return db, nil
}
