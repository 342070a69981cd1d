package version

import (
	"regexp"
	"testing"
)

func TestTag(t *testing.T) {
	tagRE := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	cases := map[string]struct {
		reason  string
		version string
		want    string
	}{
		"Release":      {"A release tag is its own image tag.", "v0.1.0", "v0.1.0"},
		"PseudoDirty":  {"Build metadata's '+' is not allowed in a tag.", "v0.0.0-20261130051802-7d6e7ad1c2f3+dirty", "v0.0.0-20261130051802-7d6e7ad1c2f3-dirty"},
		"LeadingDash":  {"A tag cannot start with '-'.", "-x", "v-x"},
		"Devel":        {"An unstamped build.", "devel", "devel"},
		"TooLong":      {"At most 128 characters.", string(make([]byte, 200)), ""},
		"OtherSymbols": {"Anything else becomes '-'.", "v1/2 3", "v1-2-3"},
	}
	defer func(v string) { version = v }(version)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			version = tc.version
			got := Tag()
			if !tagRE.MatchString(got) {
				t.Errorf("%s\nTag() = %q: not a valid image tag", tc.reason, got)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("%s\nTag(): want %q, got %q", tc.reason, tc.want, got)
			}
		})
	}
}
