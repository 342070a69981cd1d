package scenario

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Pos is a place in a scenario file.
type Pos struct {
	Line, Column int
}

// decoder fills Go values from a YAML node tree by their json tags, strictly: an unknown or
// repeated field is an error, and so is a value of the wrong YAML type. It exists because
// sigs.k8s.io/yaml converts YAML to JSON first and loses line numbers, and because
// yaml.v3's own decoding ignores json tags (the API types only have json tags). It records
// where every field path was written, so that later validation can point at a line too.
type decoder struct {
	pos map[string]Pos
}

// fieldError is an error at one field of the file.
type fieldError struct {
	Pos   Pos
	Field string
	Msg   string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Msg }

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) error {
	return &fieldError{Pos: Pos{n.Line, n.Column}, Field: path, Msg: fmt.Sprintf(format, args...)}
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
)

// decode fills v (addressable) from n; path names v in messages ("traffic[2].rate").
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.pos[path] = Pos{n.Line, n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an explicit null leaves the zero value, as JSON does
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	}
	if c, ok := v.Addr().Interface().(*Claim); ok {
		return d.decodeClaim(n, c, path)
	}
	// A type that reads itself from a scalar (a rate "10/s", a duration "30s", bounds "5")
	// does so; as a mapping it is decoded field by field below.
	if n.Kind == yaml.ScalarNode && reflect.PointerTo(v.Type()).Implements(textUnmarshaler) {
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return d.errorf(n, path, "%v", err)
		}
		return nil
	}
	// API types with their own JSON form (metav1.Duration) get exactly the JSON they expect.
	if v.Kind() != reflect.Struct || reflect.PointerTo(v.Type()).Implements(jsonUnmarshaler) {
		if u, ok := v.Addr().Interface().(json.Unmarshaler); ok {
			raw, err := scalarJSON(n)
			if err != nil {
				return d.errorf(n, path, "%v", err)
			}
			if err := u.UnmarshalJSON(raw); err != nil {
				return d.errorf(n, path, "%v", err)
			}
			return nil
		}
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, v, path)
	case reflect.Map:
		return d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, path, "want a list, got %s", describe(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			return d.errorf(n, path, "want a string, got %s (quote it to make it one)", describe(n))
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return d.errorf(n, path, "want true or false, got %s", describe(n))
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return d.errorf(n, path, "want an integer, got %s", describe(n))
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return d.errorf(n, path, "%q is not an integer of %d bits", n.Value, v.Type().Bits())
		}
		v.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return d.errorf(n, path, "want a non-negative integer, got %s", describe(n))
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return d.errorf(n, path, "%q is not a non-negative integer of %d bits", n.Value, v.Type().Bits())
		}
		v.SetUint(u)
		return nil
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") {
			return d.errorf(n, path, "want a number, got %s", describe(n))
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return d.errorf(n, path, "%q is not a finite number", n.Value)
		}
		v.SetFloat(f)
		return nil
	}
	return d.errorf(n, path, "cannot decode into %s", v.Type())
}

// decodeStruct matches mapping keys to json-tagged fields, refusing unknown and repeated keys.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, path, "want a mapping, got %s", describe(n))
	}
	fields := jsonFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			return d.errorf(k, path, "a mapping key must be a plain name, got %s", describe(k))
		}
		if k.Value == "<<" {
			return d.errorf(k, path, "merge keys (<<) are not supported: write the fields out")
		}
		if seen[k.Value] {
			return d.errorf(k, sub, "set more than once")
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			return d.errorf(k, sub, "unknown field (known here: %s)", strings.Join(sortedKeys(fields), ", "))
		}
		if err := d.decode(val, v.FieldByIndex(idx), sub); err != nil {
			return err
		}
	}
	return nil
}

// decodeMap reads a mapping with names for keys (claims, headers) into a map, refusing
// repeated keys as decodeStruct does.
func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, path, "want a mapping, got %s", describe(n))
	}
	if v.Type().Key().Kind() != reflect.String {
		return d.errorf(n, path, "cannot decode into %s", v.Type())
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" || k.Value == "" {
			return d.errorf(k, path, "a key must be a name, got %s", describe(k))
		}
		sub := join(path, k.Value)
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			return d.errorf(k, sub, "set more than once")
		}
		e := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(val, e, sub); err != nil {
			return err
		}
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
	v.Set(m)
	return nil
}

// decodeClaim reads a claim: a string, or a list of strings. Numbers, booleans and mappings
// are refused rather than turned into strings: a tier never matches them in a real token
// either, and a scenario must not pass because YAML read "1" as an integer.
func (d *decoder) decodeClaim(n *yaml.Node, c *Claim, path string) error {
	const want = "want a string or a list of strings"
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			return d.errorf(n, path, "%s, got %s (quote it to make it a string)", want, describe(n))
		}
		*c = Claim{Values: []string{n.Value}}
		return nil
	case yaml.SequenceNode:
		*c = Claim{Values: make([]string, 0, len(n.Content)), List: true}
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode || item.Tag != "!!str" {
				return d.errorf(item, fmt.Sprintf("%s[%d]", path, i), "%s, got %s in the list (quote it to make it a string)", want, describe(item))
			}
			c.Values = append(c.Values, item.Value)
		}
		return nil
	}
	return d.errorf(n, path, "%s, got %s", want, describe(n))
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// jsonFields maps the JSON names of t's fields (as encoding/json would name them, embedded
// structs flattened) to their index paths.
func jsonFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, idx := range jsonFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = []int{i}
	}
	return out
}

func sortedKeys(m map[string][]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// scalarJSON renders a scalar node as the JSON value it stands for.
func scalarJSON(n *yaml.Node) ([]byte, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("want a single value, got %s", describe(n))
	}
	switch n.Tag {
	case "!!str":
		return json.Marshal(n.Value)
	case "!!int", "!!float", "!!bool":
		return []byte(n.Value), nil
	}
	return nil, fmt.Errorf("unsupported value %s", describe(n))
}

// describe names a node's type for messages: `a list`, `the integer 5`, `the string "x"`.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int":
			return "the integer " + n.Value
		case "!!float":
			return "the number " + n.Value
		case "!!bool":
			return n.Value
		case "!!null":
			return "null"
		}
		return fmt.Sprintf("%s %q", n.Tag, n.Value)
	}
	return "an unsupported node"
}
