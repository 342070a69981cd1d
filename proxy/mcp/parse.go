package mcp

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Limits of Parse.
const (
	// MaxDepth is the deepest nesting of arrays and objects allowed anywhere in a body; a
	// single message is depth 1, its params depth 2, and a batch adds a level.
	MaxDepth = 64
	// MaxBatch is the most messages a batch may hold.
	MaxBatch = 100
)

// Parse classifies a POST body. It returns an *Error, to be answered by the proxy itself, when
// the body is not valid JSON (-32700), is not a valid message or batch (-32600), or is a limited
// call whose params lack a usable name or uri (-32602); every Error has HTTP status 400.
//
// See the package documentation for the invariant Parse keeps and the choices it makes.
func Parse(body []byte) (Body, *Error) {
	if !utf8.Valid(body) {
		return Body{}, parseError("body is not valid UTF-8")
	}
	p := parser{scanner: scanner{b: body, maxDepth: MaxDepth}}
	p.ws()
	var (
		out Body
		bad *Error // first invalid message; reported only if the whole body is valid JSON
	)
	switch p.peek() {
	case '{':
		m, e := p.message()
		if p.err != nil {
			return Body{}, p.err
		}
		out.Messages = []Message{m}
		bad = e
	case '[':
		out.Batch = true
		bad = p.batch(&out)
	default:
		if _, ok := p.value(); ok {
			bad = invalidRequest(nil, "body is neither an object nor an array")
		}
	}
	if p.err != nil {
		return Body{}, p.err
	}
	p.ws()
	if p.i != len(p.b) {
		return Body{}, parseError(fmt.Sprintf("unexpected data after the JSON value at offset %d", p.i))
	}
	if bad != nil {
		return Body{}, bad
	}
	return out, nil
}

// parser classifies the messages of one body as it scans them. keys is the duplicate-key
// check of the object being classified, kept here so that its storage serves every object.
type parser struct {
	scanner
	keys keySet
}

// batch parses a JSON array of messages into out, returning the first invalid one.
func (p *parser) batch(out *Body) *Error {
	if !p.push() {
		return nil
	}
	p.i++ // '['
	p.ws()
	if p.peek() == ']' {
		p.i++
		p.depth--
		return invalidRequest(nil, "empty batch")
	}
	var bad *Error
	out.Messages = make([]Message, 0, 4)
	for n := 1; ; n++ {
		if n > MaxBatch {
			p.limit(fmt.Sprintf("batch of more than %d messages", MaxBatch))
			return nil
		}
		p.ws()
		if p.peek() == '{' {
			m, e := p.message()
			if p.err != nil {
				return nil
			}
			out.Messages = append(out.Messages, m)
			if bad == nil && e != nil {
				bad = e
				bad.ID = nil // a single error cannot answer a batch's other requests
			}
		} else {
			if _, ok := p.value(); !ok {
				return nil
			}
			if bad == nil {
				bad = invalidRequest(nil, fmt.Sprintf("batch element %d is not an object", n))
			}
		}
		if !p.more(']') {
			if p.err != nil {
				return nil
			}
			return bad
		}
	}
}

// Keys of a message object.
const (
	keyJSONRPC = iota
	keyID
	keyMethod
	keyParams
	keyResult
	keyError
	numMessageKeys
)

var messageKeys = [numMessageKeys]string{"jsonrpc", "id", "method", "params", "result", "error"}

// foldedMessageKeys are messageKeys upper-cased, as classify wants them.
var foldedMessageKeys = [numMessageKeys]string{"JSONRPC", "ID", "METHOD", "PARAMS", "RESULT", "ERROR"}

// Keys of the params object of a limited method.
const (
	keyName = iota
	keyURI
	numParamKeys
)

var paramKeys = [numParamKeys]string{"name", "uri"}

var foldedParamKeys = [numParamKeys]string{"NAME", "URI"}

// nameKey is the params key that names what a limited method calls: the uri of
// resources/read, the name of tools/call and prompts/get.
func nameKey(method string) int {
	if method == ratelimit.MethodResourcesRead {
		return keyURI
	}
	return keyName
}

// message parses the object at p.i. It returns the message and, when it is not a valid
// message, an *Error; a syntax or limit error is left in p.err instead.
func (p *parser) message() (Message, *Error) {
	var (
		f         [numMessageKeys]span
		problem   string // the first duplicate or look-alike key
		idTainted bool   // the id key was duplicated or has a look-alike
	)
	p.keys.reset()
	depth := p.depth + 1 // the object's own depth
	for more := p.open(); more; more = p.more('}') {
		key, stable, ok := p.key()
		if !ok {
			return Message{}, nil
		}
		idx, exact := classify(key, messageKeys[:], foldedMessageKeys[:])
		record := -1
		switch {
		case idx >= 0 && exact && f[idx].typ == 0:
			record = idx
		case idx >= 0:
			if problem == "" {
				problem = keyProblem(key, messageKeys[idx], exact)
			}
			if idx == keyID {
				idTainted = true
			}
		default:
			if p.keys.add(key, stable) && problem == "" {
				problem = "duplicate key " + quote(key)
			}
		}
		p.ws()
		start := p.i
		typ, ok := p.value()
		if !ok {
			return Message{}, nil
		}
		if record >= 0 {
			f[record] = span{typ, start, p.i}
		}
	}
	if p.err != nil {
		return Message{}, nil
	}
	end := p.i

	var id json.RawMessage
	switch idv := f[keyID]; idv.typ {
	case 0:
	case '"', '0', 'n':
		if !idTainted {
			id = p.b[idv.start:idv.end]
		}
	default:
		return Message{}, invalidRequest(nil, "id must be a string, a number or null")
	}
	if problem != "" {
		return Message{}, invalidRequest(id, problem)
	}
	if v := f[keyJSONRPC]; v.typ != '"' || string(p.decode(v)) != "2.0" {
		return Message{}, invalidRequest(id, `jsonrpc must be "2.0"`)
	}

	mv := f[keyMethod]
	if mv.typ == 0 {
		// A response.
		switch {
		case f[keyResult].typ == 0 && f[keyError].typ == 0:
			return Message{}, invalidRequest(id, "a message needs a method, a result or an error")
		case f[keyResult].typ != 0 && f[keyError].typ != 0:
			return Message{}, invalidRequest(id, "a response has a result or an error, not both")
		case f[keyID].typ == 0:
			return Message{}, invalidRequest(nil, "a response needs an id")
		}
		return Message{Kind: KindResponse, ID: id}, nil
	}
	if mv.typ != '"' {
		return Message{}, invalidRequest(id, "method must be a string")
	}
	if f[keyResult].typ != 0 || f[keyError].typ != 0 {
		return Message{}, invalidRequest(id, "a request has no result or error")
	}
	method := p.decode(mv)
	if len(method) == 0 {
		return Message{}, invalidRequest(id, "method must not be empty")
	}
	m := Message{Kind: KindNotification, Method: intern(method), ID: id}
	if f[keyID].typ != 0 {
		if f[keyID].typ == 'n' {
			return Message{}, invalidRequest(id, "a request id must not be null")
		}
		m.Kind = KindRequest
	}
	if !ratelimit.IsLimited(m.Method) {
		return m, nil
	}
	m.Limited = true

	pv := f[keyParams]
	if pv.typ != '{' {
		return Message{}, invalidParams(id, "params must be an object")
	}
	// Parse params again, now that the method is known. The first pass checked its syntax.
	p.i, p.depth = pv.start, depth
	name, e := p.params(id, nameKey(m.Method))
	p.i, p.depth = end, depth-1
	if e != nil || p.err != nil {
		return Message{}, e
	}
	m.Name = name
	return m, nil
}

// params reads key want (keyName or keyURI) from the params object at p.i.
func (p *parser) params(id json.RawMessage, want int) (string, *Error) {
	var v span
	p.keys.reset()
	for more := p.open(); more; more = p.more('}') {
		key, stable, ok := p.key()
		if !ok {
			return "", nil
		}
		idx, exact := classify(key, paramKeys[:], foldedParamKeys[:])
		switch {
		case idx >= 0 && (!exact || p.keys.add(key, stable)):
			return "", invalidRequest(id, "params: "+keyProblem(key, paramKeys[idx], exact))
		case idx < 0 && p.keys.add(key, stable):
			return "", invalidRequest(id, "params: duplicate key "+quote(key))
		}
		p.ws()
		start := p.i
		typ, ok := p.value()
		if !ok {
			return "", nil
		}
		if idx == want {
			v = span{typ, start, p.i}
		}
	}
	switch v.typ {
	case 0:
		return "", invalidParams(id, "params."+paramKeys[want]+" is missing")
	case '"':
	default:
		return "", invalidParams(id, "params."+paramKeys[want]+" must be a string")
	}
	name := p.decode(v)
	if len(name) == 0 {
		return "", invalidParams(id, "params."+paramKeys[want]+" must not be empty")
	}
	return string(name), nil
}

// keyProblem says what is wrong with a key that classify found among the meaningful keys.
func keyProblem(key []byte, meant string, exact bool) string {
	if exact {
		return "duplicate key " + quote(key)
	}
	return "key " + quote(key) + " may be read as " + strconv.Quote(meant)
}

// intern returns the method as a string, without allocating for common methods.
func intern(m []byte) string {
	switch string(m) {
	case ratelimit.MethodToolsCall:
		return ratelimit.MethodToolsCall
	case ratelimit.MethodPromptsGet:
		return ratelimit.MethodPromptsGet
	case ratelimit.MethodResourcesRead:
		return ratelimit.MethodResourcesRead
	case "initialize":
		return "initialize"
	case "notifications/initialized":
		return "notifications/initialized"
	case "ping":
		return "ping"
	case "tools/list":
		return "tools/list"
	case "prompts/list":
		return "prompts/list"
	case "resources/list":
		return "resources/list"
	case "server/discover":
		return "server/discover"
	}
	return string(m)
}

// quote quotes a key or value for an error detail, truncated to a readable length.
func quote(b []byte) string {
	const max = 64
	if len(b) <= max {
		return strconv.Quote(string(b))
	}
	n := max
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return strconv.Quote(string(b[:n])) + "..."
}
