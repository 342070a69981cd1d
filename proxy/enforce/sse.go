package enforce

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync"

	"github.com/tollgate-dev/tollgate/internal/cleanpath"
	"github.com/tollgate-dev/tollgate/proxy/route"
)

// The legacy HTTP+SSE transport (protocol 2024-11-05): the client opens an event stream with a
// GET, the server's first event is
//
//	event: endpoint
//	data: /messages?sessionId=abc
//
// and the client POSTs its JSON-RPC messages to that URL. The proxy relays the stream and reads
// that event on the way: the announced path becomes a message endpoint (route.Messages: parsed,
// authenticated and limited like the MCP endpoint), and the session it names is bound to the
// stream's caller for as long as the stream is open, so that nobody else posts into it. The
// announced URL is rewritten as an absolute path on the proxy's own origin (a client resolves
// it against the URL it used); an announcement of another origin would send clients around
// the proxy, so such a stream is cut.

// maxSSEScan bounds the bytes read while looking for the endpoint event: a stream whose first
// event has not ended by then is relayed as it is.
const maxSSEScan = 64 << 10

// errForeignEndpoint ends a stream whose endpoint event names another origin.
var errForeignEndpoint = errors.New("the upstream announced a message endpoint outside the proxy")

// sessions binds legacy sessions to the caller of their stream. Safe for concurrent use.
type sessions struct {
	mu    sync.Mutex
	bound map[string]string // path fold + "?" + name + "=" + value → user
}

func newSessions() *sessions { return &sessions{bound: map[string]string{}} }

func sessionKeys(clean string, q url.Values) []string {
	var keys []string
	for name, vs := range q {
		for _, v := range vs {
			keys = append(keys, strings.ToLower(clean)+"?"+name+"="+v)
		}
	}
	return keys
}

// bind binds every query parameter of an announced endpoint to user; unbind undoes it.
func (s *sessions) bind(keys []string, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		s.bound[k] = user
	}
}

func (s *sessions) unbind(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.bound, k)
	}
}

// allowed reports whether user may post to the message endpoint clean with query q: no value
// of q is a session bound to someone else. A session the proxy does not know (another replica
// relayed its stream, or it ended) is the upstream's to refuse; the call is limited all the
// same.
func (s *sessions) allowed(clean string, q url.Values, user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range sessionKeys(clean, q) {
		if u, ok := s.bound[k]; ok && u != user {
			return false
		}
	}
	return true
}

// sseWatch relays an event stream, reading its first event; see the comment above.
type sseWatch struct {
	body     io.ReadCloser
	base     *url.URL // the URL the stream was requested from, upstream side
	routes   *route.Table
	sessions *sessions
	user     string
	onLearn  func(path string, err error)

	scanning bool
	scanned  int    // bytes released while scanning
	in       []byte // read, not yet released: the event being scanned
	out      []byte // released, not yet returned
	keys     []string
	closed   sync.Once
}

func newSSEWatch(body io.ReadCloser, base *url.URL, routes *route.Table, s *sessions, user string, onLearn func(string, error)) *sseWatch {
	return &sseWatch{body: body, base: base, routes: routes, sessions: s, user: user, onLearn: onLearn, scanning: true}
}

func (w *sseWatch) Read(p []byte) (int, error) {
	for w.scanning && len(w.out) == 0 {
		var chunk [4 << 10]byte
		n, err := w.body.Read(chunk[:])
		w.in = append(w.in, chunk[:n]...)
		if ferr := w.scan(); ferr != nil {
			return 0, ferr
		}
		if err != nil {
			w.scanning = false
			w.out = append(w.out, w.in...)
			w.in = nil
			if len(w.out) == 0 {
				return 0, err
			}
			break
		}
	}
	if len(w.out) > 0 {
		n := copy(p, w.out)
		w.out = w.out[n:]
		return n, nil
	}
	return w.body.Read(p)
}

// scan releases the complete blocks of w.in up to and including the first event (a block
// with data; comments and retry fields do not count). That event is rewritten when it is an
// endpoint event; then scanning stops. Past maxSSEScan bytes the stream is relayed as it is.
func (w *sseWatch) scan() error {
	for w.scanning {
		end, ok := eventEnd(w.in)
		if !ok {
			if w.scanned+len(w.in) > maxSSEScan {
				w.scanning = false
				w.out, w.in = append(w.out, w.in...), nil
			}
			return nil
		}
		block := w.in[:end]
		w.scanned += end
		name, data, isEvent := parseEvent(block)
		if isEvent {
			w.scanning = false
			if name == "endpoint" {
				rewritten, err := w.endpoint(data)
				if err != nil {
					return err
				}
				if rewritten != data {
					block = []byte("event: endpoint\ndata: " + rewritten + "\n\n")
				}
			}
		}
		w.out = append(w.out, block...)
		w.in = w.in[end:]
	}
	w.out, w.in = append(w.out, w.in...), nil
	return nil
}

// endpoint learns an announced message endpoint and returns the data to relay.
func (w *sseWatch) endpoint(data string) (string, error) {
	ref, err := url.Parse(strings.TrimSpace(data))
	if err != nil {
		w.onLearn("", err)
		return data, nil // a client cannot use it either; nothing to learn
	}
	u := w.base.ResolveReference(ref)
	if !strings.EqualFold(u.Scheme, w.base.Scheme) || !strings.EqualFold(u.Host, w.base.Host) {
		w.onLearn(u.Redacted(), errForeignEndpoint)
		return "", errForeignEndpoint
	}
	clean, err := w.routes.Learn(u.EscapedPath())
	if err != nil {
		w.onLearn(u.EscapedPath(), err)
		return "", err
	}
	w.keys = sessionKeys(clean, u.Query())
	w.sessions.bind(w.keys, w.user)
	w.onLearn(clean, nil)
	rel := cleanpath.Escape(clean)
	if u.RawQuery != "" {
		rel += "?" + u.RawQuery
	}
	return rel, nil
}

func (w *sseWatch) Close() error {
	w.closed.Do(func() { w.sessions.unbind(w.keys) })
	return w.body.Close()
}

// eventEnd finds the blank line that ends the first event of b (SSE lines end in \n, \r\n or
// \r) and returns the offset just after it.
func eventEnd(b []byte) (int, bool) {
	lineStart := 0
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' && b[i] != '\r' {
			continue
		}
		next := i + 1
		if b[i] == '\r' {
			if i+1 == len(b) {
				return 0, false // \r\n may be split across reads
			}
			if b[i+1] == '\n' {
				next++
			}
		}
		if i == lineStart {
			return next, true // an empty line
		}
		lineStart = next
		i = next - 1
	}
	return 0, false
}

// parseEvent reads an event block: its event name ("message" when unset), its data (lines
// joined with \n), and whether it dispatches an event (it has a data field).
func parseEvent(block []byte) (name, data string, isEvent bool) {
	name = "message"
	var datas []string
	for _, line := range bytes.FieldsFunc(block, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			name = string(value)
		case "data":
			datas = append(datas, string(value))
		}
	}
	return name, strings.Join(datas, "\n"), len(datas) > 0
}
