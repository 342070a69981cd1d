package mcp

import (
	"bytes"
	"unicode"
	"unicode/utf8"
)

// Key case folding. encoding/json matches an object key to a struct field case-insensitively,
// under Unicode simple folding ("ſ" is an "s", "K", the Kelvin sign, a "k"), and keeps the last
// of keys that match one field. So a key that folds to a meaningful key is that key to an
// upstream, and two keys equal under folding are duplicates to it. The functions here apply
// the same folding, so that the parser refuses such keys instead of reading another key than
// the upstream reads.

// classify finds key among keys. exact reports a byte-exact match; otherwise idx >= 0 means
// key is a look-alike of keys[idx]: equal under case folding once '_' and '-' are dropped (as
// encoding/json/v2's case-insensitive mode drops them). folded holds keys in the form
// foldMatches wants: upper-case ASCII.
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

// foldNext returns the folded form of the first rune of b and its length in b.
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

// appendFold appends the folded form of b to dst: keys equal under folding append the same
// bytes.
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
