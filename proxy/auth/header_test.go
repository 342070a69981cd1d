package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func TestHeaderAuthenticate(t *testing.T) {
	const name = "X-Forwarded-User"
	trusted := []string{"10.0.0.0/8", "2001:db8::/32"}
	untrusted := &Error{Status: http.StatusUnauthorized, Message: "identity header from an untrusted address"}

	type args struct {
		trustedProxies []string
		remoteAddr     string
		values         []string // nil: no header
	}
	type want struct {
		user string
		err  error
	}
	cases := map[string]struct {
		reason string
		args   args
		want   want
	}{
		"Present": {
			reason: "The header's value is the user id.",
			args:   args{values: []string{"alice"}},
			want:   want{user: "alice"},
		},
		"Absent": {
			reason: "No header is anonymous; the proxy refuses it where a per-user limit applies.",
			want:   want{user: ""},
		},
		"Empty": {
			reason: "An empty header is anonymous.",
			args:   args{values: []string{""}},
			want:   want{user: ""},
		},
		"Twice": {
			reason: "Two header lines are refused: which one the gateway set is unknowable.",
			args:   args{values: []string{"alice", "bob"}},
			want:   want{err: &Error{Status: http.StatusUnauthorized, Message: "identity header sent more than once"}},
		},
		"TwiceSameValue": {
			reason: "Two header lines are refused even when they agree.",
			args:   args{values: []string{"alice", "alice"}},
			want:   want{err: &Error{Status: http.StatusUnauthorized, Message: "identity header sent more than once"}},
		},
		"CommaInValue": {
			reason: "One header line is taken whole, commas and all.",
			args:   args{values: []string{"alice, bob"}},
			want:   want{user: "alice, bob"},
		},
		"ControlCharacters": {
			reason: "A value with control characters is malformed.",
			args:   args{values: []string{"alice\x00"}},
			want:   want{err: &Error{Status: http.StatusBadRequest, Message: "identity header contains control characters"}},
		},
		"C1ControlCharacters": {
			reason: "Unicode C1 controls are control characters too.",
			args:   args{values: []string{"alice\u0085"}},
			want:   want{err: &Error{Status: http.StatusBadRequest, Message: "identity header contains control characters"}},
		},
		"InvalidUTF8": {
			reason: "A value that is not UTF-8 is malformed.",
			args:   args{values: []string{"alice\xff"}},
			want:   want{err: &Error{Status: http.StatusBadRequest, Message: "identity header is not valid UTF-8"}},
		},
		"TooLong": {
			reason: "A value longer than 1024 bytes is malformed.",
			args:   args{values: []string{strings.Repeat("a", MaxUserIDLength+1)}},
			want:   want{err: &Error{Status: http.StatusBadRequest, Message: "identity header is longer than 1024 bytes"}},
		},
		"LongestAllowed": {
			reason: "A value of exactly 1024 bytes is accepted.",
			args:   args{values: []string{strings.Repeat("a", MaxUserIDLength)}},
			want:   want{user: strings.Repeat("a", MaxUserIDLength)},
		},
		"TrustedPeer": {
			reason: "From a peer inside trustedProxies the header is accepted.",
			args:   args{trustedProxies: trusted, remoteAddr: "10.1.2.3:5555", values: []string{"alice"}},
			want:   want{user: "alice"},
		},
		"UntrustedPeerWithHeader": {
			reason: "From a peer outside trustedProxies a request carrying the header is refused, never trusted.",
			args:   args{trustedProxies: trusted, remoteAddr: "192.0.2.1:5555", values: []string{"alice"}},
			want:   want{err: untrusted},
		},
		"UntrustedPeerWithEmptyHeader": {
			reason: "Carrying the header, even empty, from an untrusted peer is refused.",
			args:   args{trustedProxies: trusted, remoteAddr: "192.0.2.1:5555", values: []string{""}},
			want:   want{err: untrusted},
		},
		"UntrustedPeerWithoutHeader": {
			reason: "From an untrusted peer a request without the header is anonymous.",
			args:   args{trustedProxies: trusted, remoteAddr: "192.0.2.1:5555"},
			want:   want{user: ""},
		},
		"IPv6Peer": {
			reason: "An IPv6 peer inside an IPv6 CIDR is trusted.",
			args:   args{trustedProxies: trusted, remoteAddr: "[2001:db8::7]:5555", values: []string{"alice"}},
			want:   want{user: "alice"},
		},
		"IPv6PeerWithZone": {
			reason: "A zone on the peer address does not stop it matching.",
			args:   args{trustedProxies: []string{"fe80::/10"}, remoteAddr: "[fe80::1%eth0]:5555", values: []string{"alice"}},
			want:   want{user: "alice"},
		},
		"IPv6PeerUntrusted": {
			reason: "An IPv6 peer outside every CIDR is untrusted.",
			args:   args{trustedProxies: trusted, remoteAddr: "[2001:db9::7]:5555", values: []string{"alice"}},
			want:   want{err: untrusted},
		},
		"IPv4MappedPeer": {
			reason: "An IPv4-mapped IPv6 peer (a dual-stack listener) matches IPv4 CIDRs.",
			args:   args{trustedProxies: trusted, remoteAddr: "[::ffff:10.9.9.9]:5555", values: []string{"alice"}},
			want:   want{user: "alice"},
		},
		"UnparseablePeer": {
			reason: "A peer address that is no IP (a Unix socket) is untrusted.",
			args:   args{trustedProxies: trusted, remoteAddr: "@", values: []string{"alice"}},
			want:   want{err: untrusted},
		},
		"PeerWithoutPort": {
			reason: "A bare IP as RemoteAddr is still matched.",
			args:   args{trustedProxies: trusted, remoteAddr: "10.0.0.1", values: []string{"alice"}},
			want:   want{user: "alice"},
		},
	}
	for name2, tc := range cases {
		t.Run(name2, func(t *testing.T) {
			a, err := New(context.Background(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: name, TrustedProxies: tc.args.trustedProxies}})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			r := httptest.NewRequest(http.MethodPost, mcpURL, nil)
			if tc.args.remoteAddr != "" {
				r.RemoteAddr = tc.args.remoteAddr
			}
			// A trusted address in X-Forwarded-For, which the peer writes, must change nothing.
			r.Header.Set("X-Forwarded-For", "10.0.0.1")
			for _, v := range tc.args.values {
				r.Header.Add("x-forwarded-user", v) // any case: the configured name is canonicalised
			}
			id, err := a.Authenticate(r)
			user := id.User
			if diff := cmp.Diff(tc.want.user, user); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want user, +got user:\n%s", tc.reason, diff)
			}
			if diff := cmp.Diff(tc.want.err, err, ignoreCause); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want error, +got error:\n%s", tc.reason, diff)
			}
			// Only an identified caller carries the gateway's headers, for tiers to match on.
			var attrs ratelimit.Attributes
			if tc.want.user != "" {
				attrs.Header = r.Header
			}
			if diff := cmp.Diff(attrs, id.Attributes); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want attributes, +got attributes:\n%s", tc.reason, diff)
			}
			if a.Required() {
				t.Errorf("Required(): want false for header authentication")
			}
			if diff := cmp.Diff(http.Header{}, a.Challenge(r)); diff != "" {
				t.Errorf("Challenge(...): -want, +got:\n%s", diff)
			}
		})
	}
}

func TestAnonymous(t *testing.T) {
	a, err := New(context.Background(), v1alpha1.ProxyAuth{Anonymous: &v1alpha1.AnonymousAuth{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := request("Bearer whatever")
	r.Header.Set("X-Forwarded-User", "alice")
	id, err := a.Authenticate(r)
	user := id.User
	if diff := cmp.Diff("", user); diff != "" {
		t.Errorf("Authenticate(...): anonymous identifies nobody: -want user, +got user:\n%s", diff)
	}
	if err != nil {
		t.Errorf("Authenticate(...): want no error, got %v", err)
	}
	if a.Required() {
		t.Errorf("Required(): want false for anonymous")
	}
	if diff := cmp.Diff(http.Header{}, a.Challenge(r)); diff != "" {
		t.Errorf("Challenge(...): -want, +got:\n%s", diff)
	}
}
