package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// FuzzHeaderAuthenticate: no header value or peer address panics, and every refusal is a
// 400 or 401 *Error; an accepted id is bounded and free of control characters.
func FuzzHeaderAuthenticate(f *testing.F) {
	f.Add("alice", "", "10.0.0.1:1")
	f.Add("alice\x00", "bob", "[::ffff:10.0.0.1]:1")
	f.Add(strings.Repeat("\xff", 2000), "", "[fe80::1%eth0]:1")
	f.Add("", "", "garbage")
	a, err := New(context.Background(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{
		Name: "X-Forwarded-User", TrustedProxies: []string{"10.0.0.0/8", "fe80::/10"},
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v1, v2, remoteAddr string) {
		r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/mcp"}, RemoteAddr: remoteAddr,
			Header: http.Header{"X-Forwarded-User": {v1}}}
		if v2 != "" {
			r.Header.Add("X-Forwarded-User", v2)
		}
		id, err := a.Authenticate(r)
		user := id.User
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Status != http.StatusBadRequest && e.Status != http.StatusUnauthorized) || user != "" {
				t.Fatalf("Authenticate: got (%q, %#v), want a 400 or 401 *Error", user, err)
			}
			return
		}
		if checkUserID(user) != "" {
			t.Fatalf("Authenticate: accepted %q", user)
		}
	})
}

// FuzzBearer: no Authorization header, Host, path or X-Forwarded-Proto panics the parsing or
// the challenge, and every WWW-Authenticate value is printable ASCII with balanced quotes and
// no escapes.
func FuzzBearer(f *testing.F) {
	f.Add("Bearer abc", "mcp.example.com", "/mcp", "https")
	f.Add("bearer", "h\"ost\r\n", "/a\"b\\c", "https\r\nX: y")
	f.Add("Basic \x00", "", "", "")
	f.Add("Bearer ===", "[::1]:80", "/é", "http, https")
	a, err := New(context.Background(), v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{
		Issuer: "https://issuer.example.com", Audience: "tollgate",
	}})
	if err != nil {
		f.Fatal(err)
	}
	o := a.(*oidcAuth)
	f.Fuzz(func(t *testing.T, authorization, host, path, proto string) {
		r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: host,
			Header: http.Header{"Authorization": {authorization}, "X-Forwarded-Proto": {proto}}}
		headers := []http.Header{o.Challenge(r)}
		tok, perr := o.bearerToken(r)
		if perr != nil {
			headers = append(headers, perr.Header)
		} else if !isB64Token(tok) {
			t.Fatalf("bearerToken returned %q, not a b64token", tok)
		}
		for _, h := range headers {
			v := h.Get("WWW-Authenticate")
			for i := 0; i < len(v); i++ {
				if v[i] < 0x20 || v[i] > 0x7e || v[i] == '\\' {
					t.Fatalf("WWW-Authenticate %q: byte %#x at %d", v, v[i], i)
				}
			}
			if strings.Count(v, `"`)%2 != 0 {
				t.Fatalf("WWW-Authenticate %q: unbalanced quotes", v)
			}
		}
	})
}

// FuzzVerifySignature: no token panics the key set, and it returns a payload only for a
// token that one of its keys signed, under an allowed algorithm (never none, never HMAC keyed
// by the public key), and only the payload that key signed. The keys are cached: nothing is
// fetched.
func FuzzVerifySignature(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "k1", Algorithm: string(jose.RS256), Use: "sig"}
	k := newRemoteKeys("http://127.0.0.1:1/jwks", http.DefaultClient, time.Second, time.Now)
	k.setKeys([]jose.JSONWebKey{pub})
	k.fetches.fetch = func() (*keySet, error) { return k.current(), nil } // never the network

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	jws, err := signer.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		f.Fatal(err)
	}
	valid, err := jws.CompactSerialize()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3] + "AAA")
	f.Add(`eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.`)
	f.Add(`eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.AAAA`)
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		payload, err := k.VerifySignature(context.Background(), tok)
		if err != nil {
			if payload != nil {
				t.Fatalf("an error (%v) with a payload", err)
			}
			return
		}
		parsed, perr := jose.ParseSignedCompact(tok, joseAlgs)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse with the allowed algorithms: %v", tok, perr)
		}
		want, verr := parsed.Verify(&pub)
		if verr != nil || string(want) != string(payload) {
			t.Fatalf("accepted %q: payload %q, the key verifies %q (%v)", tok, payload, want, verr)
		}
	})
}
