package mcp

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// upstream is how a lenient Go MCP server reads a message: encoding/json into a struct, which
// matches keys case-insensitively, keeps the last duplicate, and replaces invalid UTF-8.
type upstream struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	} `json:"params"`
}

// sameAsUpstream reports how got differs from what upstream runs, or "".
func sameAsUpstream(up upstream, got Message) string {
	if got.Method != up.Method {
		return "method " + quote([]byte(got.Method)) + ", upstream runs " + quote([]byte(up.Method))
	}
	if !ratelimit.IsLimited(up.Method) {
		if got.Limited {
			return "limited, upstream method " + quote([]byte(up.Method)) + " is not"
		}
		return ""
	}
	name := up.Params.Name
	if up.Method == ratelimit.MethodResourcesRead {
		name = up.Params.URI
	}
	if !got.Limited || got.Name != name {
		return "name " + quote([]byte(got.Name)) + ", upstream runs " + quote([]byte(name))
	}
	return ""
}

// FuzzParse checks Parse never panics and keeps the package's security invariant: whenever
// encoding/json reads a limited call from a body, Parse either refuses the body or classifies
// it as that very call. It also checks Parse against encoding/json's validity and checks the
// errors it returns.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add([]byte(tc.body))
	}
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","ńame":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","urı":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","URİ":"b"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"prompts/get","params":{"name":"\ud800"}}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0041me":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"pa\u0072ams":{"name":"b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, perr := Parse(body)
		if perr != nil {
			checkError(t, body, perr)
		} else {
			checkBody(t, body, got)
		}

		var one upstream
		if err := json.Unmarshal(body, &one); err == nil && perr == nil {
			if got.Batch || len(got.Messages) != 1 {
				t.Fatalf("Parse(%q): %d messages (batch %v), encoding/json reads one object", body, len(got.Messages), got.Batch)
			}
			if d := sameAsUpstream(one, got.Messages[0]); d != "" {
				t.Fatalf("Parse(%q): %s", body, d)
			}
		}
		var batch []upstream
		if err := json.Unmarshal(body, &batch); err == nil && perr == nil {
			if !got.Batch || len(got.Messages) != len(batch) {
				t.Fatalf("Parse(%q): %d messages (batch %v), encoding/json reads a batch of %d", body, len(got.Messages), got.Batch, len(batch))
			}
			for i := range batch {
				if d := sameAsUpstream(batch[i], got.Messages[i]); d != "" {
					t.Fatalf("Parse(%q): message %d: %s", body, i, d)
				}
			}
		}
	})
}

func checkError(t *testing.T, body []byte, e *Error) {
	t.Helper()
	switch e.Code {
	case CodeParseError:
		if e.ID != nil {
			t.Fatalf("Parse(%q): parse error echoes id %q", body, e.ID)
		}
		if utf8.Valid(body) && json.Valid(body) {
			t.Fatalf("Parse(%q): %v, but encoding/json finds the body valid", body, e)
		}
	case CodeInvalidRequest, CodeInvalidParams:
	default:
		t.Fatalf("Parse(%q): unexpected code in %v", body, e)
	}
	if e.HTTPStatus != 400 || e.Message == "" || e.Detail == "" {
		t.Fatalf("Parse(%q): incomplete error %#v", body, e)
	}
	if e.ID != nil {
		checkID(t, body, e.ID)
	}
	if r := e.Response(); !json.Valid(r) {
		t.Fatalf("Parse(%q): error response %q is not JSON", body, r)
	}
}

func checkBody(t *testing.T, body []byte, b Body) {
	t.Helper()
	if !utf8.Valid(body) || !json.Valid(body) {
		t.Fatalf("Parse(%q) accepts a body encoding/json finds invalid", body)
	}
	if len(b.Messages) == 0 || !b.Batch && len(b.Messages) != 1 {
		t.Fatalf("Parse(%q): %d messages (batch %v)", body, len(b.Messages), b.Batch)
	}
	for _, m := range b.Messages {
		if m.Limited != ratelimit.IsLimited(m.Method) || m.Limited && m.Name == "" || !m.Limited && m.Name != "" {
			t.Fatalf("Parse(%q): inconsistent message %+v", body, m)
		}
		switch m.Kind {
		case KindRequest:
			checkID(t, body, m.ID)
		case KindNotification:
			if m.ID != nil || m.Method == "" {
				t.Fatalf("Parse(%q): inconsistent notification %+v", body, m)
			}
		case KindResponse:
			checkID(t, body, m.ID)
			if m.Method != "" {
				t.Fatalf("Parse(%q): response with a method %+v", body, m)
			}
		default:
			t.Fatalf("Parse(%q): kind %v", body, m.Kind)
		}
	}
	if r := BatchErrorResponse(b.Messages, -32000, "x", nil); r != nil && !json.Valid(r) {
		t.Fatalf("Parse(%q): batch error response %q is not JSON", body, r)
	}
}

// checkID checks id is a JSON string, number or null taken verbatim from body.
func checkID(t *testing.T, body, id json.RawMessage) {
	t.Helper()
	if len(id) == 0 || !json.Valid(id) || id[0] == '{' || id[0] == '[' || id[0] == 't' || id[0] == 'f' || !bytes.Contains(body, id) {
		t.Fatalf("Parse(%q): bad id %q", body, id)
	}
}
