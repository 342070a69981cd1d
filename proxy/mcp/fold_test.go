package mcp

import (
	"encoding/json"
	"strconv"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// TestLookAlikeKeys replaces each letter of each meaningful key by every rune of its case
// folding orbit ("s" by "S" and "ſ", "k" by "K" and the Kelvin sign) and checks both that
// encoding/json takes the variant for the key and that classify calls it a look-alike.
func TestLookAlikeKeys(t *testing.T) {
	sets := map[string]struct {
		keys, folded []string
	}{
		"Message": {messageKeys[:], foldedMessageKeys[:]},
		"Params":  {paramKeys[:], foldedParamKeys[:]},
	}
	for setName, set := range sets {
		for want, key := range set.keys {
			for i, c := range key {
				for r := unicode.SimpleFold(c); r != c; r = unicode.SimpleFold(r) {
					variant := key[:i] + string(r) + key[i+utf8.RuneLen(c):]
					if !upstreamMatches(key, variant) {
						t.Errorf("%s: encoding/json does not take %q for %q; the test is wrong", setName, variant, key)
					}
					idx, exact := classify([]byte(variant), set.keys, set.folded)
					if diff := cmp.Diff([2]any{want, false}, [2]any{idx, exact}); diff != "" {
						t.Errorf("%s: classify(%q): -want, +got:\n%s", setName, variant, diff)
					}
				}
			}
			for _, variant := range []string{"_" + key, key + "-", "-" + key[:1] + "_" + key[1:]} {
				idx, exact := classify([]byte(variant), set.keys, set.folded)
				if diff := cmp.Diff([2]any{want, false}, [2]any{idx, exact}); diff != "" {
					t.Errorf("%s: classify(%q): -want, +got:\n%s", setName, variant, diff)
				}
			}
			idx, exact := classify([]byte(key), set.keys, set.folded)
			if diff := cmp.Diff([2]any{want, true}, [2]any{idx, exact}); diff != "" {
				t.Errorf("%s: classify(%q): -want, +got:\n%s", setName, key, diff)
			}
		}
	}
	for _, other := range []string{"", "arguments", "_meta", "nam", "names", "ıd", "İd", "method\x00", "me thod"} {
		idx, _ := classify([]byte(other), messageKeys[:], foldedMessageKeys[:])
		idx2, _ := classify([]byte(other), paramKeys[:], foldedParamKeys[:])
		if idx != -1 || idx2 != -1 {
			t.Errorf("classify(%q): %d, %d, want -1", other, idx, idx2)
		}
	}
}

// upstreamMatches reports whether encoding/json decodes key variant into a field tagged key.
func upstreamMatches(key, variant string) bool {
	doc := []byte(`{` + strconv.Quote(variant) + `:"x"}`)
	var v struct {
		JSONRPC, ID, Method, Params, Result, Error, Name, URI string
	}
	// Field names equal the keys case-insensitively, which is all encoding/json needs.
	if err := json.Unmarshal(doc, &v); err != nil {
		return false
	}
	got := map[string]string{"jsonrpc": v.JSONRPC, "id": v.ID, "method": v.Method, "params": v.Params,
		"result": v.Result, "error": v.Error, "name": v.Name, "uri": v.URI}
	return got[key] == "x"
}
