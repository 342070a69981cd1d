package resourceuri

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

var generated = flag.Int("generated", 300, "how many generated inputs TestCanonicalAgreesWithWHATWG checks against node besides the hand-picked ones")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	stopNode()
	os.Exit(code)
}

// theReport is the resource that every spelling of the attack reaches.
const theReport = "file:///data/report.txt"

// bypassSpellings are the spellings of file:///data/report.txt that reached the resource
// through the TypeScript SDK server's new URL(uri).toString() lookup but got fresh buckets
// from the RFC 3986 normaliser.
var bypassSpellings = map[string]string{
	"canonical":                     "file:///data/report.txt",
	"localhost host":                "file://localhost/data/report.txt",
	"LOCALHOST host":                "file://LocalHost/data/report.txt",
	"one slash":                     "file:/data/report.txt",
	"no slash":                      "file:data/report.txt",
	"backslashes":                   `file:\\\data\report.txt`,
	"backslash in path":             `file:///data\report.txt`,
	"mixed slashes":                 `file:/\/data\report.txt`,
	"leading space":                 " file:///data/report.txt",
	"trailing space":                "file:///data/report.txt ",
	"leading C0 control":            "\x01file:///data/report.txt",
	"trailing NUL":                  "file:///data/report.txt\x00",
	"surrounding C0 and spaces":     "\x1f \x00file:///data/report.txt \x1f",
	"embedded tab":                  "file:///da\tta/report.txt",
	"embedded newline":              "file:///data/rep\nort.txt",
	"embedded CR LF":                "fi\r\nle:///data/report.txt",
	"tab in scheme":                 "f\tile:///data/report.txt",
	"upper-case scheme":             "FILE:///data/report.txt",
	"mixed-case scheme":             "File:///data/report.txt",
	"dot segment":                   "file:///data/./report.txt",
	"double-dot segment":            "file:///data/x/../report.txt",
	"leading double dots":           "file:///../../data/report.txt",
	"encoded dot segment":           "file:///data/%2e/report.txt",
	"encoded double-dot":            "file:///data/x/%2e%2e/report.txt",
	"upper-case encoded double-dot": "file:///data/x/%2E%2E/report.txt",
	"half-encoded double-dot":       "file:///data/x/.%2e/report.txt",
	"double-dot with backslash":     `file:///data/x\..\report.txt`,
	"encoded unreserved letters":    "file:///%64ata/report%2Etxt",
	"everything at once":            "\t FILE:\\\\LOCALHOST\\data\\.\\x\\%2E%2e\\rep\nort.txt \x00",
}

// canonicalCases are the table of TestCanonical; TestCanonicalAgreesWithWHATWG also checks
// their inputs against node.
func canonicalCases() map[string]struct {
	reason  string
	uri     string
	want    string
	wantErr error
} {
	type c = struct {
		reason  string
		uri     string
		want    string
		wantErr error
	}
	cases := map[string]c{
		// http(s)
		"HTTPHostCase":           {reason: "Special hosts are domains: lower-cased.", uri: "HTTP://Example.COM/Path", want: "http://example.com/Path"},
		"HTTPDefaultPort":        {reason: "The default port goes.", uri: "http://example.com:80/", want: "http://example.com/"},
		"HTTPSDefaultPort":       {reason: "The default port of https is 443.", uri: "https://example.com:443/x", want: "https://example.com/x"},
		"HTTPOtherPort":          {reason: "Another port stays, without leading zeros.", uri: "http://example.com:08080/", want: "http://example.com:8080/"},
		"HTTPLeadingZeroDefault": {reason: "0080 is 80, the default.", uri: "http://example.com:0080/", want: "http://example.com/"},
		"HTTPSPort80":            {reason: "80 is not https's default.", uri: "https://example.com:80/", want: "https://example.com:80/"},
		"HTTPEmptyPath":          {reason: "A special URL's empty path is /.", uri: "https://example.com", want: "https://example.com/"},
		"HTTPEmptyPort":          {reason: "An empty port is no port.", uri: "http://example.com:/", want: "http://example.com/"},
		"HTTPTrailingDot":        {reason: "A trailing dot is part of the domain (a different host).", uri: "http://example.com./", want: "http://example.com./"},
		"HTTPIPv4Hex":            {reason: "IPv4 number forms are read as WHATWG reads them.", uri: "http://0x7f.1/", want: "http://127.0.0.1/"},
		"HTTPIPv4Decimal":        {reason: "A single number is a whole IPv4 address.", uri: "http://2130706433/", want: "http://127.0.0.1/"},
		"HTTPIPv4Octal":          {reason: "A leading zero means octal.", uri: "http://0177.0.0.01/", want: "http://127.0.0.1/"},
		"HTTPIPv4Encoded":        {reason: "A host is percent-decoded before it is read.", uri: "http://%31%32%37.0.0.1/", want: "http://127.0.0.1/"},
		"HTTPIPv6Compressed":     {reason: "IPv6 addresses are compressed.", uri: "http://[0:0:0:0:0:0:0:1]/", want: "http://[::1]/"},
		"HTTPIPv6V4":             {reason: "An embedded IPv4 address is written in hex.", uri: "http://[::ffff:127.0.0.1]/", want: "http://[::ffff:7f00:1]/"},
		"HTTPCredentials":        {reason: "Credentials stay.", uri: "http://User:Pass@Example.com/", want: "http://User:Pass@example.com/"},
		"HTTPBackslashes":        {reason: "Backslashes are slashes in special URLs.", uri: `http:\\example.com\a\b`, want: "http://example.com/a/b"},
		"HTTPNoSlashes":          {reason: "A special scheme needs no slashes.", uri: "http:example.com/a", want: "http://example.com/a"},
		"HTTPManySlashes":        {reason: "Extra slashes before the host are ignored.", uri: "http:///example.com/a", want: "http://example.com/a"},
		"HTTPDotSegments":        {reason: "Dot segments are removed.", uri: "http://example.com/a/./b/../c/%2e%2E/d", want: "http://example.com/a/d"},
		"HTTPSpaceInPath":        {reason: "A space in a path is percent-encoded.", uri: "http://example.com/a b", want: "http://example.com/a%20b"},
		"HTTPUnicodePath":        {reason: "Non-ASCII in a path is UTF-8 percent-encoded, upper-case hex.", uri: "http://example.com/\u00fc", want: "http://example.com/%C3%BC"},
		"WSDefaultPort":          {reason: "ws's default port is 80.", uri: "ws://example.com:80/", want: "ws://example.com/"},
		"WSSDefaultPort":         {reason: "wss's default port is 443.", uri: "wss://example.com:443", want: "wss://example.com/"},
		"FTPDefaultPort":         {reason: "ftp's default port is 21.", uri: "ftp://example.com:21/x", want: "ftp://example.com/x"},
		"FileDriveLetterPipe":    {reason: "C| is the drive letter C:.", uri: "file:///C|/x", want: "file:///C:/x"},
		"FileDriveLetterHost":    {reason: "A drive letter where the host would be is the path.", uri: "file://C:/x", want: "file:///C:/x"},
		"FileDriveDoubleDot":     {reason: "A lone drive letter is never removed.", uri: "file:///C:/../x", want: "file:///C:/x"},
		"FileOtherHost":          {reason: "Another host stays; it is another resource.", uri: "file://server/share/x", want: "file://server/share/x"},
		"FileBackslashHost":      {reason: "Two backslashes start a host: this is not file:///data/...", uri: `file:\\data\report.txt`, want: "file://data/report.txt"},
		"FileFourBackslashes":    {reason: "Four backslashes: empty host, then an empty first segment.", uri: `file:\\\\data\\report.txt`, want: "file:////data//report.txt"},
		"FileEncodedDriveLetter": {reason: "Decoding %43 makes a drive letter; the next round normalises it.", uri: "file:///%43|/x", want: "file:///C:/x"},
		// Non-special schemes.
		"OpaqueHostCase":      {reason: "A non-special host is opaque: its case stays.", uri: "db://Main/x", want: "db://Main/x"},
		"SchemeCase":          {reason: "Schemes are lower-cased.", uri: "DB://Main/x", want: "db://Main/x"},
		"URN":                 {reason: "An opaque path stays as it is.", uri: "urn:isbn:123", want: "urn:isbn:123"},
		"CustomScheme":        {reason: "An opaque path keeps its case.", uri: "custom:Thing", want: "custom:Thing"},
		"OpaquePathSpaces":    {reason: "Leading and trailing spaces go; inner ones stay in an opaque path.", uri: " custom:a b ", want: "custom:a b"},
		"OpaquePathDots":      {reason: "An opaque path has no dot segments.", uri: "urn:a/../b", want: "urn:a/../b"},
		"NonSpecialDots":      {reason: "A hierarchical non-special path loses its dot segments.", uri: "db://main/a/./b/../c", want: "db://main/a/c"},
		"NonSpecialBackslash": {reason: "A backslash is no slash in a non-special URL: it stays.", uri: `db://main/a\b`, want: `db://main/a\b`},
		"NonSpecialPort":      {reason: "Non-special schemes have no default port.", uri: "db://main:80/x", want: "db://main:80/x"},
		"NonSpecialNoHost":    {reason: "A path that starts with // and has no host gets /. in front.", uri: "db:/.//x", want: "db:/.//x"},
		"NonSpecialEmptyHost": {reason: "An empty host stays.", uri: "db:///x", want: "db:///x"},
		"OpaqueHostEncoded":   {reason: "An opaque host keeps its escapes; merge decodes the unreserved ones.", uri: "db://%4d%61in/x", want: "db://Main/x"},
		"OpaqueHostSpaceEsc":  {reason: "Other escapes are upper-cased.", uri: "db://a%2cb/x", want: "db://a%2Cb/x"},
		"OpaqueHostIPv6":      {reason: "An IPv6 host is parsed in any scheme.", uri: "db://[0::1]/x", want: "db://[::1]/x"},
		// Percent-escapes, queries and fragments.
		"UnreservedDecoded":  {reason: "Escapes of unreserved characters are decoded.", uri: "http://example.com/%7Euser/%41%62%2D%5F%2E", want: "http://example.com/~user/Ab-_."},
		"ReservedUpperCased": {reason: "Other escapes keep, upper-cased.", uri: "http://example.com/a%2fb%3f%c3%bc", want: "http://example.com/a%2Fb%3F%C3%BC"},
		"LonePercent":        {reason: "A % that starts no escape is kept as it is.", uri: "http://example.com/100%/%zz", want: "http://example.com/100%/%zz"},
		"EscapeFromEscapes":  {reason: "Decoding forms a new escape; the next round decodes it.", uri: "http://example.com/%%34%31", want: "http://example.com/A"},
		"EscapeNested3":      {reason: "Nested three deep: three rounds.", uri: "http://example.com/" + nestedEscape(3), want: "http://example.com/A"},
		"EncodedPercent":     {reason: "%25 is a literal % and stays encoded.", uri: "http://example.com/%2541", want: "http://example.com/%2541"},
		"Query":              {reason: "Query: space and quote encoded in a special URL, escapes merged.", uri: "http://example.com/?a=%7e b&c='", want: "http://example.com/?a=~%20b&c=%27"},
		"QueryNonSpecial":    {reason: "A non-special query does not encode the quote.", uri: "db://main/?c='", want: "db://main/?c='"},
		"QueryDotsStay":      {reason: "A query has no dot segments.", uri: "http://example.com/?/../x", want: "http://example.com/?/../x"},
		"EmptyQuery":         {reason: "An empty query stays (it is another URL).", uri: "http://example.com/?", want: "http://example.com/?"},
		"Fragment":           {reason: "Fragments stay, encoded and merged.", uri: "http://example.com/#a b%7e`", want: "http://example.com/#a%20b~%60"},
		"EmptyFragment":      {reason: "An empty fragment stays.", uri: "http://example.com/#", want: "http://example.com/#"},
		// Refused: not URLs.
		"Empty":            {reason: "Nothing is no URL.", uri: "", wantErr: ErrInvalid},
		"NoScheme":         {reason: "A relative reference has no base here.", uri: "/data/report.txt", wantErr: ErrInvalid},
		"NoSchemeName":     {reason: "A bare name is relative too.", uri: "report.txt", wantErr: ErrInvalid},
		"SchemeOnlyColon":  {reason: "A scheme must start with a letter.", uri: "1a:x", wantErr: ErrInvalid},
		"UnclosedIPv6":     {reason: "An IPv6 host must be closed.", uri: "http://[::1", wantErr: ErrInvalid},
		"DoubleBracket":    {reason: "Node's IPv6 parser fails on a second bracket (the library trims it).", uri: "a://[[::]", wantErr: ErrInvalid},
		"DoubleBracketEnd": {reason: "Also at the end.", uri: "http://[::1]]/", wantErr: ErrInvalid},
		"EmptyBrackets":    {reason: "No address.", uri: "http://[]/", wantErr: ErrInvalid},
		"BadIPv6":          {reason: "Two compressions.", uri: "http://[1::2::3]/", wantErr: ErrInvalid},
		"SpaceInHost":      {reason: "A space is a forbidden host code point.", uri: "http://exa mple.com/", wantErr: ErrInvalid},
		"BadIPv4":          {reason: "A host that ends in a number must be an IPv4 address.", uri: "http://1.2.3.256/", wantErr: ErrInvalid},
		"HTTPNoHost":       {reason: "A special URL other than file needs a host.", uri: "http://", wantErr: ErrInvalid},
		"HTTPNoHostQuery":  {reason: "Still no host.", uri: "http:?x", wantErr: ErrInvalid},
		"BadPort":          {reason: "A port is a number.", uri: "http://example.com:8o/", wantErr: ErrInvalid},
		"PortTooBig":       {reason: "A port is at most 65535.", uri: "http://example.com:65536/", wantErr: ErrInvalid},
		"FileWithPort":     {reason: "A file URL has no port.", uri: "file://host:8/x", wantErr: ErrInvalid},
		"TooLong":          {reason: "Input is bounded.", uri: "file:///" + strings.Repeat("a", MaxLength), wantErr: ErrInvalid},
		"InvalidUTF8":      {reason: "A JSON string is never invalid UTF-8; refuse it.", uri: "file:///\xff", wantErr: ErrInvalid},
		// Refused: valid, but not canonicalised exactly like Node 20.
		"UnicodeHost":        {reason: "IDNA is not supported.", uri: "http://b\u00fccher.example/", wantErr: ErrUnsupported},
		"EncodedUnicodeHost": {reason: "Nor when percent-encoded.", uri: "http://b%C3%BCcher.example/", wantErr: ErrUnsupported},
		"PunycodeHost":       {reason: "Nor punycode, which IDNA validates.", uri: "http://xn--bcher-kva.example/", wantErr: ErrUnsupported},
		"FullwidthHost":      {reason: "Nor what IDNA maps to ASCII.", uri: "http://\uff45xample.com/", wantErr: ErrUnsupported},
		"SignedNumberHost":   {reason: "The library reads +0 as an IPv4 number, Node as a domain.", uri: "http:+0", wantErr: ErrUnsupported},
		"SignedNumberHost2":  {reason: "Node refuses +1.2 (not an IPv4 address), the library would not.", uri: "http://+1.2/", wantErr: ErrUnsupported},
		"SignedHexHost":      {reason: "A sign after 0x.", uri: "http://0x-1/", wantErr: ErrUnsupported},
		"LongNumberLabel":    {reason: "The library sees an overflow before the letter; Node a domain label.", uri: "http:20000000000000000000A", wantErr: ErrUnsupported},
		"SignLikeHost":       {reason: "A sign before something that is no number is fine.", uri: "http://-a.b+c/", want: "http://-a.b+c/"},
		"DotNamedQuirk":      {reason: "Node 20 keeps every dot segment after a first \"/.b\" segment.", uri: "file:///data/.x/../report.txt", wantErr: ErrUnsupported},
		"DotNamedQuirk2":     {reason: "Also a trailing single dot, in any scheme.", uri: "a:/00/.0/.", wantErr: ErrUnsupported},
		"DotNamedNoDots":     {reason: "A .name segment alone is fine.", uri: "file:///home/.config/x", want: "file:///home/.config/x"},
		"DriveLetterQuirk":   {reason: "Node 20 keeps a first segment that starts like a drive letter.", uri: "file:///u:x/../y", wantErr: ErrUnsupported},
		"EmptiedPathQuirk":   {reason: "Node 20 drops the / of a non-special path emptied by ..", uri: "urn://h/..", wantErr: ErrUnsupported},
		"EmptiedPathQuirk2":  {reason: "Also without a host.", uri: "db:/a/%2e%2e", wantErr: ErrUnsupported},
		"LongAuthority":      {reason: "Hosts are bounded (the parser is quadratic in them).", uri: "db://" + strings.Repeat("h", 257) + "/x", wantErr: ErrUnsupported},
		"LongUserinfo":       {reason: "So is userinfo.", uri: "http://" + strings.Repeat("u", 250) + "@example.com/", wantErr: ErrUnsupported},
		"ManySlashes":        {reason: "And the number of segments.", uri: "file:///" + strings.Repeat("a/", 128), wantErr: ErrUnsupported},
		"LongCanonical":      {reason: "The canonical form is bounded too.", uri: "file:///" + strings.Repeat("\u00fc", 1500), wantErr: ErrUnsupported},
		"TooDeep":            {reason: "Escapes nested deeper than the rounds allow.", uri: "http://x/" + nestedEscape(4), wantErr: ErrUnsupported},
		// Still accepted.
		"NonSpecialUnicodeHost":  {reason: "A non-special host is opaque: no IDNA.", uri: "db://b\u00fccher/x", want: "db://b%C3%BCcher/x"},
		"DriveLetterNoDots":      {reason: "A letter and colon without .. is fine.", uri: "file:///u:x/y", want: "file:///u:x/y"},
		"NonSpecialDotsKeepPath": {reason: ".. that leaves a segment is fine.", uri: "urn://h/a/b/..", want: "urn://h/a/"},
	}
	for name, s := range bypassSpellings {
		cases["Bypass "+name] = c{reason: "A spelling of the attack.", uri: s, want: theReport}
	}
	return cases
}

func TestCanonical(t *testing.T) {
	for name, tc := range canonicalCases() {
		t.Run(name, func(t *testing.T) {
			got, err := Canonical(tc.uri)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nCanonical(%q): -want +got:\n%s", tc.reason, tc.uri, diff)
			}
			if diff := cmp.Diff(tc.wantErr, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("%s\nCanonical(%q) error: -want +got:\n%s", tc.reason, tc.uri, diff)
			}
		})
	}
}

// TestBypassSpellingsShareOneBucket is the regression test for the attack: every spelling
// that reaches file:///data/report.txt through new URL(uri).toString() gets one canonical
// form; and node confirms it (with merge applied: "%64ata" reaches the resource only through
// a server that decodes escapes).
func TestBypassSpellingsShareOneBucket(t *testing.T) {
	got := map[string][]string{}
	var names []string
	for name, s := range bypassSpellings {
		names = append(names, name)
		c, err := Canonical(s)
		if err != nil {
			c = "error: " + err.Error()
		}
		got[c] = append(got[c], name)
	}
	slices.Sort(names)
	for _, v := range got {
		slices.Sort(v)
	}
	if diff := cmp.Diff(map[string][]string{theReport: names}, got); diff != "" {
		t.Errorf("every spelling must share the one bucket of %s: -want +got:\n%s", theReport, diff)
	}

	n := needNode(t)
	in := make([]string, len(names))
	for i, name := range names {
		in[i] = bypassSpellings[name]
	}
	res, err := nodeCanonical(n, in)
	if err != nil {
		t.Fatal(err)
	}
	reached := map[string][]string{}
	for i, r := range res {
		reached[r.Canonical] = append(reached[r.Canonical], names[i])
	}
	if diff := cmp.Diff(map[string][]string{theReport: names}, reached); diff != "" {
		t.Errorf("node's new URL(s).toString(), merged, must give %s for every spelling (else the list is wrong): -want +got:\n%s", theReport, diff)
	}
}

// nestedEscape returns an escape of "A" nested k deep: nestedEscape(1) is "%41", and decoding
// the unreserved escapes of nestedEscape(k+1) once gives nestedEscape(k). Canonical needs k
// rounds to decode it, and one more to see that it settled.
func nestedEscape(k int) string {
	s := "%41"
	for ; k > 1; k-- {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != '%' {
				fmt.Fprintf(&b, "%%%02X", c)
			} else {
				b.WriteByte(c)
			}
		}
		s = b.String()
	}
	return s
}

func TestMerge(t *testing.T) {
	cases := map[string]struct {
		reason string
		in     string
		want   string
	}{
		"NoEscapes":       {reason: "Nothing to do.", in: "file:///a", want: "file:///a"},
		"Unreserved":      {reason: "ALPHA DIGIT - . _ ~ are decoded.", in: "%41%7a%30%2d%2E%5f%7E", want: "Az0-._~"},
		"Reserved":        {reason: "The rest keep their escape, upper-cased.", in: "%2f%3a%c3%bc%25%20", want: "%2F%3A%C3%BC%25%20"},
		"Malformed":       {reason: "A % that starts no escape stays.", in: "%%zz%4%", want: "%%zz%4%"},
		"AtTheEnd":        {reason: "An escape at the very end is decoded.", in: "a%41", want: "aA"},
		"NewEscape":       {reason: "One pass only: a decoded escape can form a new one (Canonical iterates).", in: "%%34%31", want: "%41"},
		"Nested":          {reason: "nestedEscape(k+1) decodes to nestedEscape(k).", in: nestedEscape(3), want: nestedEscape(2)},
		"NoCaseElsewhere": {reason: "Only the hex of escapes changes case.", in: "HTTP://A/%aB", want: "HTTP://A/%AB"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, merge(tc.in)); diff != "" {
				t.Errorf("%s\nmerge(%q): -want +got:\n%s", tc.reason, tc.in, diff)
			}
		})
	}
}

// TestErrorMessagesAreShort checks that no error echoes a long URI: at most a truncated quote.
func TestErrorMessagesAreShort(t *testing.T) {
	secret := strings.Repeat("s", 200)
	for _, uri := range []string{
		"/" + secret,
		"http://[::1" + secret,
		"http://b\u00fccher/" + secret,
		"file:///" + secret + "\xff",
		strings.Repeat("x", MaxLength+1),
		"http://x/" + nestedEscape(4) + secret,
	} {
		_, err := Canonical(uri)
		if err == nil {
			t.Errorf("Canonical(%.20q…) must fail", uri)
			continue
		}
		if msg := err.Error(); len(msg) > 120 || strings.Contains(msg, strings.Repeat("s", 40)) {
			t.Errorf("error for %.20q… is too long or quotes the URI: %q", uri, msg)
		}
	}
}

// handPicked are inputs for the differential test besides the table's: WHATWG corner cases.
var handPicked = []string{
	"http://example.com", "http://EXAMPLE.com:80", "https://a.b:443/c?d#e", "http://a:b@c:1/d", "http://@c/", "http://:@c/",
	"http://a@b@c/", "http://a%40b@c/", "http://a b@c/", "http://[::]/", "http://[::1]:80/", "http://[1:2:3:4:5:6:7:8]/",
	"http://[1:0:0:2:0:0:0:3]/", "http://[1:0:0:0:0:2:0:3]/", "http://[::1.2.3.4]/", "http://[::ffff:1.2.3]/", "http://[v1.x]/",
	"http://1.2.3.4.5/", "http://1.2.3.4./", "http://1.2.3./", "http://0x100000000/", "http://4294967295/", "http://4294967296/",
	"http://09/", "http://0x/", "http://0x.0x.0/", "http://foo.09/", "http://foo.0x4/", "http://1.0x1.2/", "http://x.1/", "http://1.x/",
	"http://a..b/", "http://.a/", "http://a./", "http://A_B.Com/", "http://a*b/", "http://a%2Ab/", "http://%2e/", "http://%00/",
	"http://a<b/", "http://a^b/", "http://a|b/", "http://a%7Cb/", "http://-a-/", "http://xn--/", "http://XN--a/", "http://a.xn--b/",
	"http:/example.com/", "http:\\example.com/", "http:/\\/\\example.com/", "http:example.com", "http://", "http://#", "http://?",
	"http://example.com:065535/", "http://example.com:-1/", "http://example.com: 1/", "http://example.com:1 /",
	"https://example.com/a/..", "https://example.com/a/.", "https://example.com/..", "https://example.com/.%2E/", "https://example.com/a/%2e%2e%2e",
	"https://example.com/a%2e/", "https://example.com/./././", "https://example.com/a//b", "https://example.com/a\\b\\..\\c",
	"https://example.com/%7e%7E~", "https://example.com/?%7e", "https://example.com/#%7e", "https://example.com/?q#f#g",
	"https://example.com/\x00\x01\x7f", "https://example.com/\"<>`{}|^", "https://example.com/?\"<>`{}|^'", "https://example.com/#\"<>`{}|^'",
	"ws://example.com", "wss://example.com/x?y", "ftp://u:p@example.com:21", "ftp://example.com:2121/",
	"file:", "file:/", "file://", "file:///", "file:////", "file://localhost", "file://localhost/", "file://localhost.", "file://127.0.0.1/x",
	"file://[::1]/x", "file://host:0/", "file://u@host/", "file://C|", "file:C:", "file:/C:", "file:///C:", "file:///c:/../..", "file:///C:x",
	"file:///C:/x/../../..", "file:///x/C:/../y", "file:///a:b/c/../../y", "file:///ab/../x", "file:..", "file:.", "file:?q", "file:#f",
	"file://host/../x", "file://HOST/x", "file://ho%41st/x", "file:///%2e%2e/x", "file:///x/%2e%2E%2e", "file:///%41%42%2f",
	"FILE:///DATA/REPORT.TXT", "file:///data/report.txt?", "file:///data/report.txt#", "file:///data/report.txt/",
	"urn:", "urn:/", "urn://", "urn:///", "urn:////", "urn:/..", "urn:/.", "urn:/./..", "urn://h", "urn://h/", "urn://h/.", "urn://h/./",
	"urn://h/../x", "urn://h/a/../../x", "urn:/a/..//x", "urn:/..//x", "urn://h/a/..", "urn://h/a/../", "urn://h/a/../..", "urn:///..",
	"web+demo:/.//not-a-host/", "web+demo:/path/..//not-a-host/", "web+demo://h//x", "a+b-c.d:x", "A:x", "a:", "a:/", "a:?", "a:#",
	"mailto:User@Example.COM", "mailto:%41", "data:text/plain,Hello%20World", "javascript:alert(1)", "blob:https://example.com/uuid",
	"db://Main", "db://Main:", "db://Main:0/", "db://Ma in/", "db://Ma%20in/", "db://a<b/", "db://a%/", "db://%zz/", "db://a^b/",
	"db://[::1]", "db://[::1/", "db://u:p@h/x", "db://@h/x", "db://h?x", "db://h#x", "db://h/x?y#z", "db:\\\\h\\x", "db://h/\\..\\",
	"custom:a\tb", "custom:a\nb", "custom:a%09b", "custom:\u00fc", "custom:%C3%BC", "custom: x", "custom:x ", "custom:x\x00y",
	"\u00a0http://example.com/", "http://example.com/\u00a0", "\ufeffhttp://example.com/", "http\u00a0://x/", "ht\ntp://x/",
	"http://ex\tample.com/", "http://[::\n1]/", "http://example.com:8\t0/", "http://%61.com/", "http://%C3%BC/", "http://\u00fc.com/",
	"http://ex%2Fample/", "http://ex%5Cample/", "http://ex%3Aample/", "http://%5B::1%5D/", "http://[::%31]/",
	"http://example.com/%%34%31", "http://example.com/%2541", "http://example.com/%%%34%31", "file:///%43%3A/x", "file:///%43|",
	"file:///%63:/x/../..", "db://%4D/x", "db://%2e%2e/x", "db://h/%2e%2e%2e", "db:/%2e", "db:/%2e%2e/x",
	// Bugs fixed in ada (Node's URL parser) after 2.9.2, the version in Node 20, and near misses.
	"http://0x0000000ff/", "http://0x00000000ff/", "http://000000000000000000000377/", "http://0000000000000000000001.1/",
	"http://04294967295/", "http://99999999999999999999/", "http://a.99999999999999999999/", "http://0x.1/", "http://0X1/",
	"http://1.2.3.4%2e/", "http://1%2e2/", "http://%30/", "http://0..1/", "http://.1/", "http://1../", "http://+0/", "http://-0/",
	"http://1.-2/", "http://0x+1/", "http://a.+0/", "http://+0x1/", "http://[[::1]/", "http://[::1]]/", "db://[[::1]/", "http://[]/",
	"a:b ?c", "a:b #c", "a:b  ", "a: b", "a:b \t ", "http://h/??x", "http://h/?#", "a:b/#", "http://foo/bar^baz",
	"file:///foo/.bar/../baz.js", "file:///foo/.bar/./baz.js", "http://h/a/.b/../c", "http://h/.a/b/../c", "http://h/a/./.b/../c",
	"http://h/a/.b/%2e%2e/c", "urn:/a/.b/../c", "urn:/.a/..", "a:/00/.0/.", "file:///C:x/../y", "file:///u:x/.", "file:///C:/../..",
}

// TestCanonicalAgreesWithWHATWG runs the hand-picked inputs, the table's inputs and generated
// ones through Canonical and through node, and fails on any disagreement. It reports how many
// inputs node accepts that Canonical refuses. -args -generated=N checks N generated inputs.
func TestCanonicalAgreesWithWHATWG(t *testing.T) {
	n := needNode(t)
	in := slices.Clone(handPicked)
	for _, tc := range canonicalCases() {
		in = append(in, tc.uri)
	}
	for _, s := range bypassSpellings {
		in = append(in, s)
	}
	in = append(in, generatedCorpus(*generated, 1)...)
	disagreements, refused, accepted, err := differential(n, Canonical, in)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d inputs: node accepts %d; Canonical refuses %d of those (%.2f%%), disagrees on %d",
		len(in), accepted, len(refused), 100*float64(len(refused))/float64(max(accepted, 1)), len(disagreements))
	byReason := map[string]int{}
	for _, r := range refused {
		byReason[r[strings.LastIndex(r, ": ")+2:]]++
	}
	t.Logf("refusals by reason: %v", byReason)
	for i, r := range refused {
		if i == 20 {
			t.Logf("… and %d more", len(refused)-i)
			break
		}
		t.Logf("refused: %s", r)
	}
	for i, d := range disagreements {
		if i == 40 {
			t.Errorf("… and %d more disagreements", len(disagreements)-i)
			break
		}
		t.Errorf("disagreement: %s", d)
	}
}

// TestCheckerCatchesAWrongCanonicaliser shows that the differential check fails a
// canonicaliser that disagrees with node: the two RFC 3986 views of URIs this package
// replaces (a test here cannot import proxy/ratelimit without a cycle once it uses this
// package, so net/url stands in for its NormalizeResourceURI), and a naive lower-casing.
func TestCheckerCatchesAWrongCanonicaliser(t *testing.T) {
	n := needNode(t)
	netURL := func(s string) (string, error) {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		if u.Scheme == "" {
			return "", errors.New("relative")
		}
		return u.String(), nil
	}
	lower := func(s string) (string, error) { return strings.ToLower(s), nil }
	cases := map[string]struct {
		reason string
		canon  func(string) (string, error)
		in     []string
		want   []string
	}{
		"NetURLBypass": {
			reason: "net/url keeps localhost, so the attack gets a fresh bucket.",
			canon:  netURL,
			in:     []string{theReport, "file://localhost/data/report.txt"},
			want:   []string{`"file://localhost/data/report.txt": node gives "file:///data/report.txt" (merged "file:///data/report.txt"), canonicaliser gives "file://localhost/data/report.txt"`},
		},
		"NetURLAcceptsWhatNodeRefuses": {
			reason: "net/url accepts a host that is no IPv4 address, which node refuses.",
			canon:  netURL,
			in:     []string{"http://1.2.3.256/"},
			want:   []string{`"http://1.2.3.256/": node refuses it, canonicaliser gives "http://1.2.3.256/"`},
		},
		"ToLower": {
			reason: "Lower-casing merges paths that are different resources: the checker reports it.",
			canon:  lower,
			in:     []string{"FILE:///Data/Report.txt"},
			want:   []string{`"FILE:///Data/Report.txt": node gives "file:///Data/Report.txt" (merged "file:///Data/Report.txt"), canonicaliser gives "file:///data/report.txt"`},
		},
		"Canonical": {
			reason: "The real one agrees.",
			canon:  Canonical,
			in:     []string{theReport, "file://localhost/data/report.txt", "http://1.2.3.256/", "FILE:///Data/Report.txt"},
			want:   nil,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, _, _, err := differential(n, tc.canon, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\ndisagreements: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
	// And over the hand-picked corpus, net/url (the old normaliser's parser) is far off.
	got, _, _, err := differential(n, netURL, handPicked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Error("the checker found no disagreement between net/url and node over the hand-picked corpus")
	}
	t.Logf("net/url disagrees with node on %d of %d hand-picked inputs", len(got), len(handPicked))
}

// FuzzCanonical checks, for each input: no panic; idempotence; and, with node, agreement
// with node's new URL(x).toString() (see verdict). Without node it still checks the first two,
// except under CI=true, where a missing node fails.
func FuzzCanonical(f *testing.F) {
	for _, s := range handPicked {
		f.Add(s)
	}
	for _, s := range bypassSpellings {
		f.Add(s)
	}
	for _, s := range generatedCorpus(100, 2) {
		f.Add(s)
	}
	n, err := startNode()
	if errors.Is(err, exec.ErrNotFound) {
		if testenv.InCI() {
			testenv.Missing(f, "node", nodeHowTo)
		}
		f.Logf("node is missing (%s): fuzzing without the differential check", nodeHowTo)
	} else if err != nil {
		f.Fatalf("starting node: %v", err)
	}
	f.Fuzz(func(t *testing.T, x string) {
		got, err := Canonical(x)
		if err == nil {
			again, err := Canonical(got)
			if err != nil || again != got {
				t.Fatalf("not idempotent: Canonical(%q) = %q, Canonical(%q) = %q, %v", x, got, got, again, err)
			}
		} else if msg := err.Error(); len(msg) > 120 {
			t.Fatalf("error message too long: %q", msg)
		}
		if n == nil || len(x) > MaxLength || !utf8.ValidString(x) {
			return // Canonical refuses these, which agrees with node whatever node says
		}
		want, oerr := nodeCanonical(n, []string{x})
		if oerr != nil {
			t.Fatal(oerr)
		}
		if d, _ := verdict(x, got, err, want[0]); d != "" {
			t.Fatal(d)
		}
	})
}

// BenchmarkCanonical measures typical URIs and the slowest spellings found of the longest
// accepted ones (the proxy canonicalises every resources/read).
func BenchmarkCanonical(b *testing.B) {
	long := MaxLength - 16
	for name, uri := range map[string]string{
		"Typical":         "file:///data/report.txt",
		"TypicalHTTP":     "https://Example.com:443/a/./b/../c?x=%7e#f",
		"Bypass":          "\t FILE:\\\\LOCALHOST\\data\\.\\x\\%2E%2e\\rep\nort.txt \x00",
		"LongPath":        "file:///" + strings.Repeat("a/", long/2),
		"LongDotSegments": "file:///" + strings.Repeat("../", long/3),
		"LongEscapes":     "file:///" + strings.Repeat("%7e", long/3),
		"LongPercents":    "db://h/" + strings.Repeat("%", long),
		"LongOpaqueHost":  "db://" + strings.Repeat("%", long),
		"LongHost":        "http://" + strings.Repeat("a.", long/2) + "/",
		"LongNonASCII":    "db:" + strings.Repeat("\u00e9", 600),
		"Nested":          "http://x/" + nestedEscape(3),
		"LongQuery":       "http://h/?" + strings.Repeat("%", long),
		"LongFragment":    "http://h/#" + strings.Repeat("%", long),
		"LongOpaquePath":  "a:" + strings.Repeat("%", long),
		"LongUserinfo":    "http://" + strings.Repeat("%", long) + "@h/",
		"LongPort":        "db://h:" + strings.Repeat("0", long) + "/",
		"LongIPv6":        "http://[" + strings.Repeat("0", long) + "]/",
		"LongSegments":    "db:/" + strings.Repeat("/", long),
		"LongScheme":      strings.Repeat("a", long) + ":x",
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				_, _ = Canonical(uri)
			}
		})
	}
}
