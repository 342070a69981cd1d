package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRewriteArg: how a container's args are pointed at the node's loopback ports and host
// folders (the package comment's "Paths" and "Ports").
func TestRewriteArg(t *testing.T) {
	p := &pod{
		byNumber: map[int32]int32{8080: 41000, 9090: 41001},
		mounts: []*mount{
			{containerPath: "/var/run/tollgate/redis", hostDir: "/h/redis"},
			{containerPath: "/var/run/tollgate/redis-tls", hostDir: "/h/redis-tls"},
			{containerPath: "/etc/tollgate", hostDir: "/h/config"},
		},
	}
	cases := map[string]struct {
		reason string
		arg    string
		want   string
	}{
		"ConfigPath":       {"A file in a mounted volume is the host copy.", "--config=/etc/tollgate/proxy.yaml", "--config=/h/config/proxy.yaml"},
		"LongestMountWins": {"/var/run/tollgate/redis does not rewrite /var/run/tollgate/redis-tls.", "--ca=/var/run/tollgate/redis-tls/ca.crt", "--ca=/h/redis-tls/ca.crt"},
		"MountItself":      {"The mount path itself is the host folder.", "/etc/tollgate", "/h/config"},
		"NotAMount":        {"A path that merely starts like a mount path is left alone.", "--x=/etc/tollgateway/y", "--x=/etc/tollgateway/y"},
		"ListenAnyHost":    {"A listen address on a declared port binds loopback only.", "--listen=:8080", "--listen=127.0.0.1:41000"},
		"ListenAllIPv4":    {"0.0.0.0 is loopback too.", "--metrics-listen=0.0.0.0:9090", "--metrics-listen=127.0.0.1:41001"},
		"ListenAllIPv6":    {"[::] is loopback too.", "--listen=[::]:8080", "--listen=127.0.0.1:41000"},
		"UndeclaredPort":   {"A port the container does not declare is not the node's to map.", "--listen=:1234", "--listen=:1234"},
		"BareValue":        {"A value without a flag is rewritten alike.", ":8080", "127.0.0.1:41000"},
		"SpecificHost":     {"An address with a host is not a listen-anywhere address.", "--upstream=10.0.0.1:8080", "--upstream=10.0.0.1:8080"},
	}
	n := &Node{}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, n.rewriteArg(p, tc.arg)); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestWriteAtomic: volumes are laid out and updated as the kubelet's AtomicWriter does, so
// that a reader sees the whole old payload or the whole new one.
func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	read := func() map[string]string {
		got := map[string]string{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name()[0] == '.' {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			got[e.Name()] = string(b)
		}
		return got
	}
	if err := writeAtomic(dir, map[string][]byte{"proxy.yaml": []byte("v1"), "extra": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if diff := cmp.Diff(map[string]string{"proxy.yaml": "v1", "extra": "x"}, read()); diff != "" {
		t.Errorf("the first payload: -want +got:\n%s", diff)
	}
	if err := writeAtomic(dir, map[string][]byte{"proxy.yaml": []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"proxy.yaml": "v2"}, read()); diff != "" {
		t.Errorf("the second payload replaces the first, a removed key included: -want +got:\n%s", diff)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "proxy.yaml")); target != filepath.Join("..data", "proxy.yaml") {
		t.Errorf("proxy.yaml links to %q, want into ..data", target)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("the old payload folder %s is still there: %v", first, err)
	}
}
