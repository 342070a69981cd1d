package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Default limits of Parse.
const (
	DefaultMaxDepth = 64
	DefaultMaxBatch = 100
)

// Limits bounds what Parse accepts. A zero or negative field takes its default.
type Limits struct {
	// MaxDepth is the deepest nesting of arrays and objects allowed anywhere in the body; a
	// single message is depth 1, its params depth 2. Default DefaultMaxDepth.
	MaxDepth int
	// MaxBatch is the most messages a batch may hold. Default DefaultMaxBatch.
	MaxBatch int
}

// Parse classifies a POST body. It returns an *Error, to be answered by the proxy itself, when
// the body is not valid JSON (-32700), is not a valid message or batch (-32600), or is a limited
// call whose params lack a usable name or uri (-32602); every Error has HTTP status 400.
//
// See the package documentation for the invariant Parse keeps and the choices it makes.
func Parse(body []byte, lim Limits) (Body, *Error) {
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	if lim.MaxBatch <= 0 {
		lim.MaxBatch = DefaultMaxBatch
	}
	if !utf8.Valid(body) {
		return Body{}, parseError("body is not valid UTF-8")
	}
	s := scanner{b: body, maxDepth: lim.MaxDepth}
	s.ws()
	var (
		out Body
		bad *Error // first invalid message; reported only if the whole body is valid JSON
	)
	switch s.peek() {
	case '{':
		m, e := s.message()
		if s.err != nil {
			return Body{}, s.err
		}
		out.Messages = []Message{m}
		bad = e
	case '[':
		out.Batch = true
		bad = s.batch(&out, lim.MaxBatch)
	default:
		if _, ok := s.value(); ok {
			bad = invalidRequest(nil, "body is neither an object nor an array")
		}
	}
	if s.err != nil {
		return Body{}, s.err
	}
	s.ws()
	if s.i != len(s.b) {
		return Body{}, parseError(fmt.Sprintf("unexpected data after the JSON value at offset %d", s.i))
	}
	if bad != nil {
		return Body{}, bad
	}
	return out, nil
}

// batch parses a JSON array of messages into out, returning the first invalid one.
func (s *scanner) batch(out *Body, maxBatch int) *Error {
	if !s.push() {
		return nil
	}
	s.i++ // '['
	s.ws()
	if s.peek() == ']' {
		s.i++
		s.depth--
		return invalidRequest(nil, "empty batch")
	}
	var bad *Error
	out.Messages = make([]Message, 0, 4)
	for n := 1; ; n++ {
		if n > maxBatch {
			s.limit(fmt.Sprintf("batch of more than %d messages", maxBatch))
			return nil
		}
		s.ws()
		if s.peek() == '{' {
			m, e := s.message()
			if s.err != nil {
				return nil
			}
			out.Messages = append(out.Messages, m)
			if bad == nil && e != nil {
				bad = e
				bad.ID = nil // a single error cannot answer a batch's other requests
			}
		} else {
			if _, ok := s.value(); !ok {
				return nil
			}
			if bad == nil {
				bad = invalidRequest(nil, fmt.Sprintf("batch element %d is not an object", n))
			}
		}
		if !s.more(']') {
			if s.err != nil {
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

// foldedMessageKeys are messageKeys upper-cased, as foldMatches wants them.
var foldedMessageKeys = [numMessageKeys]string{"JSONRPC", "ID", "METHOD", "PARAMS", "RESULT", "ERROR"}

// Keys of the params object of a limited method.
const (
	keyName = iota
	keyURI
	numParamKeys
)

var paramKeys = [numParamKeys]string{"name", "uri"}

var foldedParamKeys = [numParamKeys]string{"NAME", "URI"}

// span locates a value in the body: its first byte ('0' for any number) and its extent.
// typ 0 means absent.
type span struct {
	typ        byte
	start, end int
}

// message parses the object at s.i. It returns the message and, when it is not a valid
// message, an *Error; a syntax or limit error is left in s.err instead.
func (s *scanner) message() (Message, *Error) {
	var (
		f         [numMessageKeys]span
		problem   string // the first duplicate or look-alike key
		idTainted bool   // the id key was duplicated or has a look-alike
	)
	s.keys.reset()
	depth := s.depth + 1 // the object's own depth
	for more := s.open(); more; more = s.more('}') {
		key, stable, ok := s.key()
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
			if s.keys.add(key, stable) && problem == "" {
				problem = "duplicate key " + quote(key)
			}
		}
		s.ws()
		start := s.i
		typ, ok := s.value()
		if !ok {
			return Message{}, nil
		}
		if record >= 0 {
			f[record] = span{typ, start, s.i}
		}
	}
	if s.err != nil {
		return Message{}, nil
	}
	end := s.i

	var id json.RawMessage
	switch idv := f[keyID]; idv.typ {
	case 0:
	case '"', '0', 'n':
		if !idTainted {
			id = s.b[idv.start:idv.end]
		}
	default:
		return Message{}, invalidRequest(nil, "id must be a string, a number or null")
	}
	if problem != "" {
		return Message{}, invalidRequest(id, problem)
	}
	if v := f[keyJSONRPC]; v.typ != '"' || string(s.decode(v)) != "2.0" {
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
	method := s.decode(mv)
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
	want := keyName
	switch m.Method {
	case MethodToolsCall, MethodPromptsGet:
	case MethodResourcesRead:
		want = keyURI
	default:
		return m, nil
	}
	m.Limited = true

	pv := f[keyParams]
	if pv.typ != '{' {
		return Message{}, invalidParams(id, "params must be an object")
	}
	// Parse params again, now that the method is known. The first pass checked its syntax.
	s.i, s.depth = pv.start, depth
	name, e := s.params(id, want)
	s.i, s.depth = end, depth-1
	if e != nil || s.err != nil {
		return Message{}, e
	}
	m.Name = name
	return m, nil
}

// params reads key want (keyName or keyURI) from the params object at s.i.
func (s *scanner) params(id json.RawMessage, want int) (string, *Error) {
	var v span
	s.keys.reset()
	for more := s.open(); more; more = s.more('}') {
		key, stable, ok := s.key()
		if !ok {
			return "", nil
		}
		idx, exact := classify(key, paramKeys[:], foldedParamKeys[:])
		switch {
		case idx >= 0 && (!exact || s.keys.add(key, stable)):
			return "", invalidRequest(id, "params: "+keyProblem(key, paramKeys[idx], exact))
		case idx < 0 && s.keys.add(key, stable):
			return "", invalidRequest(id, "params: duplicate key "+quote(key))
		}
		s.ws()
		start := s.i
		typ, ok := s.value()
		if !ok {
			return "", nil
		}
		if idx == want {
			v = span{typ, start, s.i}
		}
	}
	switch v.typ {
	case 0:
		return "", invalidParams(id, "params."+paramKeys[want]+" is missing")
	case '"':
	default:
		return "", invalidParams(id, "params."+paramKeys[want]+" must be a string")
	}
	name := s.decode(v)
	if len(name) == 0 {
		return "", invalidParams(id, "params."+paramKeys[want]+" must not be empty")
	}
	return string(name), nil
}

// classify finds key among keys. exact reports a byte-exact match; otherwise idx >= 0 means
// key is a look-alike of keys[idx]: equal under case folding once '_' and '-' are dropped.
func classify(key []byte, keys, folded []string) (idx int, exact bool) {
	for i, k := range keys {
		if string(key) == k {
			return i, true
		}
	}
	for i, k := range folded {
		if foldMatches(key, k) {
			return i, false
		}
	}
	return -1, false
}

func keyProblem(key []byte, meant string, exact bool) string {
	if exact {
		return "duplicate key " + quote(key)
	}
	return "key " + quote(key) + " may be read as " + strconv.Quote(meant)
}

// intern returns the method as a string, without allocating for common methods.
func intern(m []byte) string {
	switch string(m) {
	case MethodToolsCall:
		return MethodToolsCall
	case MethodPromptsGet:
		return MethodPromptsGet
	case MethodResourcesRead:
		return MethodResourcesRead
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

// scanner is a strict JSON (RFC 8259) scanner over a body already known to be valid UTF-8.
// A syntax error or a limit stops it: the first is kept in err and every method then fails.
type scanner struct {
	b        []byte
	i        int
	depth    int
	maxDepth int
	err      *Error
	scratch  []byte // decoded strings with escapes
	keys     keySet
}

func (s *scanner) fail(what string) bool {
	if s.err == nil {
		s.err = parseError(fmt.Sprintf("%s at offset %d", what, s.i))
	}
	return false
}

func (s *scanner) limit(what string) bool {
	if s.err == nil {
		s.err = invalidRequest(nil, what)
	}
	return false
}

// peek returns the byte at s.i, 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) push() bool {
	s.depth++
	if s.depth > s.maxDepth {
		return s.limit(fmt.Sprintf("nesting deeper than %d", s.maxDepth))
	}
	return true
}

// open consumes the '{' at s.i and reports whether a member follows.
func (s *scanner) open() bool {
	if !s.push() {
		return false
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		s.depth--
		return false
	}
	return true
}

// more consumes the ',' or the closing byte after a member or element and reports whether
// another follows.
func (s *scanner) more(close byte) bool {
	if s.err != nil {
		return false
	}
	s.ws()
	switch s.peek() {
	case ',':
		s.i++
		return true
	case close:
		s.i++
		s.depth--
		return false
	}
	return s.fail(fmt.Sprintf("expected ',' or '%c'", close))
}

// key reads an object key and its ':', returning the decoded key. stable reports that the key
// is part of the body; otherwise it stays valid only until the next call that decodes a string.
func (s *scanner) key() (key []byte, stable, ok bool) {
	s.ws()
	if s.peek() != '"' {
		return nil, false, s.fail("expected a string key")
	}
	start, end, esc, ok := s.str()
	if !ok {
		return nil, false, false
	}
	s.ws()
	if s.peek() != ':' {
		return nil, false, s.fail("expected ':'")
	}
	s.i++
	if !esc {
		return s.b[start:end], true, true
	}
	s.scratch = unquote(s.scratch[:0], s.b[start:end])
	return s.scratch, false, true
}

// decode returns the decoded contents of the string at v, valid until the next decode.
func (s *scanner) decode(v span) []byte {
	raw := s.b[v.start+1 : v.end-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	s.scratch = unquote(s.scratch[:0], raw)
	return s.scratch
}

// value scans the value at s.i (after whitespace) and returns its type: its first byte, or
// '0' for a number.
func (s *scanner) value() (byte, bool) {
	s.ws()
	c := s.peek()
	switch c {
	case '{':
		for more := s.open(); more; more = s.more('}') {
			if _, _, ok := s.key(); !ok {
				return 0, false
			}
			if _, ok := s.value(); !ok {
				return 0, false
			}
		}
	case '[':
		if !s.push() {
			return 0, false
		}
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			s.depth--
			return c, true
		}
		for more := true; more; more = s.more(']') {
			if _, ok := s.value(); !ok {
				return 0, false
			}
		}
	case '"':
		_, _, _, ok := s.str()
		return c, ok
	case 't':
		return c, s.literal("true")
	case 'f':
		return c, s.literal("false")
	case 'n':
		return c, s.literal("null")
	case 0:
		return 0, s.fail("unexpected end of input")
	default:
		return '0', s.number()
	}
	return c, s.err == nil
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.i += len(lit)
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		return s.fail("invalid character")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return s.fail("invalid number")
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return s.fail("invalid number")
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	s.i = i
	return true
}

// str scans the string whose opening quote is at s.i, returning the extent of its contents
// and whether it has escapes.
func (s *scanner) str() (start, end int, esc, ok bool) {
	b := s.b
	start = s.i + 1
	for i := start; i < len(b); {
		if plain[b[i]] {
			i++
			continue
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return start, i, esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				s.i = len(b)
				return 0, 0, false, s.fail("unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
				continue
			case 'u':
				if i+6 <= len(b) && hex4(b[i+2:i+6]) >= 0 {
					i += 6
					continue
				}
			}
			s.i = i
			return 0, 0, false, s.fail("invalid escape")
		case c < 0x20:
			s.i = i
			return 0, 0, false, s.fail("control character in string")
		default:
			i++
		}
	}
	s.i = len(b)
	return 0, 0, false, s.fail("unterminated string")
}

// plain[c] is true for the bytes a string may hold as they are: all but '"', '\\' and
// control characters.
var plain = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unquote appends the decoded form of the string contents s (checked by str) to dst, exactly as
// encoding/json decodes them: a surrogate escape that is not half of a valid pair becomes U+FFFD.
func unquote(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := bytes.IndexByte(s[i:], '\\')
			if j < 0 {
				return append(dst, s[i:]...)
			}
			dst = append(dst, s[i:i+j]...)
			i += j
			continue
		}
		switch c := s[i+1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = hex4(s[i+2 : i+6])
				}
				if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
					dst = utf8.AppendRune(dst, d)
					i += 6
					continue
				}
				r = unicode.ReplacementChar
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		i += 2
	}
	return dst
}

// foldRune returns the smallest rune of r's simple case-folding orbit, as encoding/json does.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// foldMatches reports whether key equals target (upper-case ASCII letters) under case folding,
// ignoring '_' and '-' in key.
func foldMatches(key []byte, target string) bool {
	j := 0
	for i := 0; i < len(key); {
		var r rune
		if c := key[i]; c < utf8.RuneSelf {
			i++
			if c == '_' || c == '-' {
				continue
			}
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			r = rune(c)
		} else {
			rr, n := utf8.DecodeRune(key[i:])
			i += n
			r = foldRune(rr)
		}
		if j >= len(target) || r != rune(target[j]) {
			return false
		}
		j++
	}
	return j == len(target)
}

// foldEqual reports whether a and b are equal under case folding.
func foldEqual(a, b []byte) bool {
	for len(a) > 0 && len(b) > 0 {
		ra, na := foldNext(a)
		rb, nb := foldNext(b)
		if ra != rb {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) == len(b)
}

func foldNext(b []byte) (rune, int) {
	if c := b[0]; c < utf8.RuneSelf {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		return rune(c), 1
	}
	r, n := utf8.DecodeRune(b)
	return foldRune(r), n
}

func appendFold(dst, b []byte) []byte {
	for len(b) > 0 {
		r, n := foldNext(b)
		dst = utf8.AppendRune(dst, r)
		b = b[n:]
	}
	return dst
}

// keySet finds duplicate keys, under case folding, among the other keys of one object.
type keySet struct {
	n     int
	small [8][]byte // the first keys; compared one by one
	big   map[string]struct{}
}

func (k *keySet) reset() {
	k.n = 0
	k.big = nil
}

// add adds key and reports whether an equal key was there already. stable says key stays
// valid (it is part of the body); otherwise add copies it.
func (k *keySet) add(key []byte, stable bool) bool {
	if k.big != nil {
		f := string(appendFold(nil, key))
		if _, dup := k.big[f]; dup {
			return true
		}
		k.big[f] = struct{}{}
		return false
	}
	for _, p := range k.small[:k.n] {
		if foldEqual(p, key) {
			return true
		}
	}
	if k.n < len(k.small) {
		if !stable {
			key = bytes.Clone(key)
		}
		k.small[k.n] = key
		k.n++
		return false
	}
	k.big = make(map[string]struct{}, 4*len(k.small))
	for _, p := range k.small {
		k.big[string(appendFold(nil, p))] = struct{}{}
	}
	k.big[string(appendFold(nil, key))] = struct{}{}
	return false
}
