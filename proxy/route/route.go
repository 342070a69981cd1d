// Package route decides what the proxy does with a request path: the MCP endpoint (in any
// spelling an upstream framework could route to it), a legacy HTTP+SSE message endpoint the
// proxy learned from a stream it relayed, an allow-listed pass-through path, or nothing (404).
//
// # Why paths are cleaned
//
// The proxy parses and limits what it believes is the MCP endpoint; the upstream runs what its
// framework routes to its handler. Frameworks disagree on spelling: Express routes
// case-insensitively and ignores a trailing slash, Go's ServeMux and Python's ASGI servers
// decode percent-escapes, Tomcat strips ";" parameters, several treat "\" as "/". A path that
// any of them could route to the endpoint must be the endpoint here, or it would be forwarded
// unparsed around every limit. So a path is matched in a cleaned form that merges all those
// spellings ([cleanpath.Clean]), and the endpoint is matched case-insensitively. Merging only ever turns
// more paths into the endpoint, which is safe: they are parsed, authenticated and limited, and
// forwarded to the upstream under the endpoint's own exact path.
//
// Every forwarded request goes to the upstream under a path the proxy chose: the endpoint's
// configured path, or the cleaned path of a pass-through request. What the upstream routes is
// therefore what the proxy matched.
package route

import (
	"fmt"
	"strings"
	"sync"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/cleanpath"
)

// Kind says what a request path is to the proxy.
type Kind int

const (
	// NotFound: neither the endpoint, a learned message endpoint, nor allow-listed: 404.
	NotFound Kind = iota
	// Endpoint is the MCP endpoint (Streamable HTTP; also the URL a legacy HTTP+SSE client
	// opens its stream on).
	Endpoint
	// Messages is a path of the legacy HTTP+SSE transport (protocol 2024-11-05): configured
	// (upstream.legacySSEPaths), or learned from the endpoint event of a stream the proxy
	// relayed. A POST there is parsed and limited like one to Endpoint; a GET opens a stream.
	Messages
	// Passthrough is a path of upstream.passthroughPaths: forwarded unparsed, authenticated.
	Passthrough
)

func (k Kind) String() string {
	switch k {
	case NotFound:
		return "not found"
	case Endpoint:
		return "endpoint"
	case Messages:
		return "messages"
	case Passthrough:
		return "passthrough"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// MaxLearned bounds the message endpoints a proxy learns: an upstream announces one.
const MaxLearned = 16

// Match is what a request path is to the proxy.
type Match struct {
	Kind Kind
	// Path is the escaped path the request is forwarded under: the endpoint's configured
	// path for Endpoint, the cleaned path otherwise.
	Path string
	// Clean is the cleaned path.
	Clean string
	// Rule is the pass-through rule that matched (Passthrough only).
	Rule *v1alpha1.PassthroughPath
}

// Table routes request paths. Safe for concurrent use; Learn may add message endpoints while
// it serves.
type Table struct {
	endpoint      string // as configured, escaped: what the upstream receives
	endpointClean string
	rules         []v1alpha1.PassthroughPath // cleaned paths

	mu      sync.RWMutex
	learned map[string]string // folded cleaned path → escaped cleaned path
}

// New builds the table for the upstream endpoint's escaped path ("" is "/"), the paths of the
// legacy HTTP+SSE transport configured in advance (upstream.legacySSEPaths: known to every
// replica before any stream announced them) and the pass-through rules. A rule whose path is
// not in clean form is an error naming it. A rule that covers the endpoint or a legacy path
// does not pass it through: those are matched first.
func New(endpoint string, legacySSEPaths []string, rules []v1alpha1.PassthroughPath) (*Table, error) {
	if endpoint == "" {
		endpoint = "/"
	}
	ec, err := cleanpath.Clean(endpoint)
	if err != nil {
		return nil, fmt.Errorf("upstream.url path %q: %w", endpoint, err)
	}
	t := &Table{endpoint: endpoint, endpointClean: ec, learned: map[string]string{}}
	for i, r := range rules {
		// The rule's path is matched against cleaned paths: one that cleaning changes could
		// never match (the API's validation refuses it already).
		if c, err := cleanpath.Clean(r.Path); err != nil || c != r.Path {
			return nil, fmt.Errorf("upstream.passthroughPaths[%d].path %q: not a clean absolute path", i, r.Path)
		}
	}
	t.rules = append(t.rules, rules...)
	for i, p := range legacySSEPaths {
		if _, err := t.Learn(p); err != nil {
			return nil, fmt.Errorf("upstream.legacySSEPaths[%d] %q: %w", i, p, err)
		}
	}
	return t, nil
}

// Endpoint is the endpoint's escaped path, as configured.
func (t *Table) Endpoint() string { return t.endpoint }

// Match routes an escaped request path. The error wraps [cleanpath.ErrBadPath].
func (t *Table) Match(escaped string) (Match, error) {
	c, err := cleanpath.Clean(escaped)
	if err != nil {
		return Match{}, err
	}
	if strings.EqualFold(c, t.endpointClean) {
		return Match{Kind: Endpoint, Path: t.endpoint, Clean: c}, nil
	}
	t.mu.RLock()
	var learned string
	ok := false
	if len(t.learned) > 0 {
		learned, ok = t.learned[fold(c)]
	}
	t.mu.RUnlock()
	if ok {
		return Match{Kind: Messages, Path: learned, Clean: c}, nil
	}
	for i := range t.rules {
		if r := &t.rules[i]; covers(r, c) {
			return Match{Kind: Passthrough, Path: cleanpath.Escape(c), Clean: c, Rule: r}, nil
		}
	}
	return Match{Kind: NotFound, Clean: c}, nil
}

// covers: an Exact rule matches its path; a Prefix rule matches its path and every path below
// it, element by element (as a Kubernetes Ingress does: /docs covers /docs/a, not /docsx).
func covers(r *v1alpha1.PassthroughPath, clean string) bool {
	if clean == r.Path {
		return true
	}
	if r.PathType != v1alpha1.PathTypePrefix {
		return false
	}
	return r.Path == "/" || strings.HasPrefix(clean, r.Path+"/")
}

// Learn makes the escaped path of a legacy message endpoint, announced by a stream the proxy
// relays, a Messages path. It returns the cleaned path, and an error when the path is
// malformed or MaxLearned paths are known already (the upstream announces one; more is not
// an MCP server).
func (t *Table) Learn(escaped string) (string, error) {
	c, err := cleanpath.Clean(escaped)
	if err != nil {
		return "", err
	}
	if strings.EqualFold(c, t.endpointClean) {
		return c, nil // the endpoint is parsed already
	}
	k := fold(c)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.learned[k]; ok {
		return c, nil
	}
	if len(t.learned) >= MaxLearned {
		return "", fmt.Errorf("more than %d message endpoints announced", MaxLearned)
	}
	t.learned[k] = cleanpath.Escape(c)
	return c, nil
}

// fold is the case-insensitive key of a cleaned path: Express routes case-insensitively, so
// /Messages and /messages are one endpoint. Upper then lower case merges what Unicode simple
// folding merges ("ſ" and "s", the Kelvin sign and "k"), as strings.EqualFold (the endpoint's
// comparison) does.
func fold(c string) string { return strings.ToLower(strings.ToUpper(c)) }
