package mcp

import (
	"bytes"
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a strict JSON (RFC 8259) scanner over a body already known to be valid UTF-8. It
// checks syntax and nesting depth and locates values; what the values mean is the parser's
// (parse.go). A syntax error or a limit stops it: the first is kept in err and every method
// then fails.
//
// Strings and keys are decoded exactly as encoding/json decodes them (see unquote), since a
// decoded method or name is what the upstream runs.
type scanner struct {
	b        []byte
	i        int
	depth    int
	maxDepth int
	err      *Error
	scratch  []byte // decoded strings with escapes
}

// span locates a value in the body: its first byte ('0' for any number) and its extent.
// typ 0 means absent.
type span struct {
	typ        byte
	start, end int
}

// fail records a syntax error: -32700, at the current offset.
func (s *scanner) fail(what string) bool {
	if s.err == nil {
		s.err = parseError(fmt.Sprintf("%s at offset %d", what, s.i))
	}
	return false
}

// limit records a structural limit: -32600, since the body may be valid JSON.
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

// push enters an array or object, failing when that is deeper than maxDepth.
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
