package resourceuri

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// This file holds the oracle of the differential tests: Node 20's new URL(s).toString(),
// through testdata/whatwg.js, started once per test process and fed a line at a time.

const nodeHowTo = "apt-get install -y nodejs"

// nodeURL is a running testdata/whatwg.js.
type nodeURL struct {
	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

var (
	nodeOnce sync.Once
	nodeProc *nodeURL
	nodeErr  error
)

// startNode starts testdata/whatwg.js once per test process (a fuzz worker is a process of its
// own and starts its own). It returns exec.ErrNotFound when there is no node.
func startNode() (*nodeURL, error) {
	nodeOnce.Do(func() {
		path, err := exec.LookPath("node")
		if err != nil {
			nodeErr = err
			return
		}
		cmd := exec.Command(path, "testdata/whatwg.js")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			nodeErr = err
			return
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			nodeErr = err
			return
		}
		if err := cmd.Start(); err != nil {
			nodeErr = err
			return
		}
		nodeProc = &nodeURL{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<16)}
		// One known answer proves the script runs.
		res, err := nodeProc.hrefs([]string{"FILE://localhost/x"})
		if err == nil && (!res[0].OK || res[0].Href != "file:///x") {
			err = fmt.Errorf("testdata/whatwg.js answered %+v for FILE://localhost/x", res[0])
		}
		if err != nil {
			nodeErr = err
			stopNode()
			nodeProc = nil
		}
	})
	return nodeProc, nodeErr
}

// stopNode ends the node process, if one was started: closing its stdin makes it exit.
func stopNode() {
	if nodeProc == nil {
		return
	}
	_ = nodeProc.stdin.Close()
	_ = nodeProc.cmd.Wait()
}

// needNode returns the node oracle; without node the test fails under CI=true and is skipped
// elsewhere.
func needNode(t testing.TB) *nodeURL {
	t.Helper()
	n, err := startNode()
	if errors.Is(err, exec.ErrNotFound) {
		testenv.Missing(t, "node", nodeHowTo)
	}
	if err != nil {
		t.Fatalf("starting node: %v", err)
	}
	return n
}

// nodeResult is one line of testdata/whatwg.js.
type nodeResult struct {
	OK   bool   `json:"ok"`
	Href string `json:"href"`
	Bad  bool   `json:"bad"`
}

// hrefs asks node for new URL(s).toString() of each input, streaming them all through.
func (n *nodeURL) hrefs(in []string) ([]nodeResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	werr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriter(n.stdin)
		for _, s := range in {
			j, err := json.Marshal(s)
			if err != nil {
				werr <- err
				return
			}
			_, _ = bw.Write(j) // a failed write shows in Flush
			_ = bw.WriteByte('\n')
		}
		werr <- bw.Flush()
	}()
	out := make([]nodeResult, len(in))
	for i := range in {
		line, err := n.out.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("reading node's answer %d: %w", i, err)
		}
		if err := json.Unmarshal(line, &out[i]); err != nil {
			return nil, fmt.Errorf("node's answer %q: %w", line, err)
		}
		if out[i].Bad {
			return nil, fmt.Errorf("node could not read input %d", i)
		}
	}
	if err := <-werr; err != nil {
		return nil, err
	}
	return out, nil
}

// oracleResult is what Canonical must return for an input, computed with node as W.
type oracleResult struct {
	// OK is false where node refuses the input (or a later round's input), where the input is
	// not valid UTF-8 (a JSON string never is; Canonical refuses it), or where the rounds do
	// not settle.
	OK bool
	// Canonical is the fixpoint of merge(node(x)); it is merge(node(x)) unless merging changed
	// what node makes of the result.
	Canonical string
	// NodeHref is node(x), the first round's answer.
	NodeHref string
}

// nodeCanonical computes Canonical's specification for each input: the fixpoint of
// x ↦ merge(node(x)), at most maxRounds rounds, all inputs of a round in one stream.
func nodeCanonical(n *nodeURL, in []string) ([]oracleResult, error) {
	out := make([]oracleResult, len(in))
	cur := make([]string, len(in))
	var pending []int
	for i, s := range in {
		if utf8.ValidString(s) {
			cur[i] = s
			pending = append(pending, i)
		}
	}
	for round := 0; round < maxRounds && len(pending) > 0; round++ {
		ask := make([]string, len(pending))
		for k, i := range pending {
			ask[k] = cur[i]
		}
		res, err := n.hrefs(ask)
		if err != nil {
			return nil, err
		}
		var next []int
		for k, i := range pending {
			if !res[k].OK {
				continue
			}
			if round == 0 {
				out[i].NodeHref = res[k].Href
			}
			m := merge(res[k].Href)
			if m == cur[i] {
				out[i].OK, out[i].Canonical = true, m
				continue
			}
			cur[i] = m
			next = append(next, i)
		}
		pending = next
	}
	return out, nil
}

// verdict compares a canonicaliser's answer for x with the oracle's. It returns "" where they
// agree: both refuse; both give the same form; or the oracle accepts and the canonicaliser
// refuses (refusing is always safe). refused reports that last case.
func verdict(x, got string, gotErr error, want oracleResult) (disagreement string, refused bool) {
	switch {
	case !want.OK && gotErr == nil:
		return fmt.Sprintf("%.300q: node refuses it, canonicaliser gives %.300q", x, got), false
	case !want.OK:
		return "", false
	case gotErr != nil:
		return "", true
	case got != want.Canonical:
		return fmt.Sprintf("%.300q: node gives %.300q (merged %.300q), canonicaliser gives %.300q", x, want.NodeHref, want.Canonical, got), false
	}
	return "", false
}

// differential runs canon on every input and compares it with the node oracle. It returns
// the disagreements and the inputs node accepts that canon refuses.
func differential(n *nodeURL, canon func(string) (string, error), in []string) (disagreements, refused []string, nodeAccepts int, err error) {
	want, err := nodeCanonical(n, in)
	if err != nil {
		return nil, nil, 0, err
	}
	for i, x := range in {
		if want[i].OK {
			nodeAccepts++
		}
		got, gotErr := canon(x)
		d, r := verdict(x, got, gotErr, want[i])
		if d != "" {
			disagreements = append(disagreements, d)
		}
		if r {
			refused = append(refused, fmt.Sprintf("%.100q (node: %.100q): %v", x, want[i].Canonical, gotErr))
		}
	}
	return disagreements, refused, nodeAccepts, nil
}

// Pieces of URLs that the generated corpus is built from: spellings that WHATWG parsers have
// been seen to get wrong, or that tell a WHATWG parser from an RFC 3986 one.
var (
	genWrap    = []string{"", " ", "\t", "\n", "\x00", "\x1f", "\x01", "\u00a0", "\r\n"}
	genSchemes = []string{"http:", "HTTP:", "https:", "hTTps:", "ws:", "wss:", "ftp:", "file:", "FILE:", "File:", "db:", "urn:", "custom:", "a+b-c.d:", "x:", "mailto:", "data:", "javascript:", "blob:", "web+demo:", "", "1a:", "-a:", "a b:", "\u00e9:", "h\ttp:", " http:"}
	genAuth    = []string{"", "/", "//", "///", "////", "\\", "\\\\", "\\\\\\", "/\\", "\\/", "//\t/"}
	genUser    = []string{"", "user@", "u:p@", "u:@", ":p@", "@", "u@v@", "%41@", "u%40@", "a b@", "\u00fc@", "u:p:q@", "%7e:%7E@"}
	genHost    = []string{"", "localhost", "LOCALHOST", "LocalHost.", "example.com", "Example.COM", "EXAMPLE.com.", "a..b", "A_B.Com", "Ex*AMPLE", "0x7f.1", "127.1", "127.0.0.1", "0177.0.0.1", "0x7F000001", "2130706433", "1.2.3.4.5", "1.2.3.256", "256", "4294967296", "09", "0x", "1.2.3.", "1.2.3.4.", "[::1]", "[::]", "[0:0:0:0:0:0:0:1]", "[1:0:0:2::3]", "[::ffff:1.2.3.4]", "[::ffff:7f00:1]", "[::1", "[:1]", "[1::2::3]", "[v1.x]", "[::1.2.3]", "%41bc", "a%2eb", "%30x7f.1", "exa mple", "ex%20ample", "a<b", "a^b", "a|b", "a%00b", "xn--nxasmq6b", "XN--a", "%78n--a", "\u00fc.com", "\u00c9.com", "%C3%BC.com", "\u2022", "a\u00adb", "\uff21.com", "*", "_a", "a_b", "-a", "a-", "%", "%zz", "C:", "c|", "1.2.3.0x10", "0x100.0", "1.0x1.2", "foo.09", "foo.0x", "x.1", "1.x"}
	genPort    = []string{"", ":", ":80", ":443", ":21", ":0", ":8080", ":080", ":65535", ":65536", ":-1", ":1a", ": 1", ":99999999999"}
	genPath    = []string{"", "/", "/a", "/A", "/data/report.txt", "/./", "/../", "/.", "/..", "/x/..", "/%2e/", "/%2E%2e/", "/.%2e/", "/%2e.", "/%2e%2E", "/a%2fb", "/%7e", "/%7Euser", "/~user", "/%41", "/%4a", "/%zz", "/%", "/%2", "/%%34%31", "/%2541", "/%43|", "/%43%3A", "/%c3%bc", "/\u00fc", "/\u00e9t\u00e9", "/a b", "/a\tb", "/a\nb", "/a\rb", "/\\", "\\x\\y", "/C:", "/c|", "/C|/x", "C:/x", "/u:x", "u:x/", "/a|b", "/\"<>`{}", "/^", "/'", "/%00", "/\x00", "/\x7f", "/\ufffd", "/\U0001F600", "//x", "/;x", "/a=b&c", "a", "a/b", "./a", "../a", "..", ".", "/%2e%2e/%2e", "/ ", "/..\\", "/.\\", "/x/%2e%2e\\", "/[]", "/@", "/:", "%2e%2e/x"}
	genQuery   = []string{"", "?", "?a=b", "?a b", "?%7e", "?%7E", "?~", "?'", "?\"", "?<>", "?a#b", "?%zz", "?\u00fc", "?\x01", "?&&", "?a+b", "?%2B", "?/../x"}
	genFrag    = []string{"", "#", "#x", "#`", "# ", "#\u00fc", "#%7e", "#a#b", "#<>\"", "#\x01", "#%zz", "#'", "#/../x"}
)

// generatedCorpus returns n inputs built from the pieces above, the same for the same seed.
func generatedCorpus(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	out := make([]string, 0, n)
	for len(out) < n {
		var b strings.Builder
		if r.IntN(8) == 0 {
			b.WriteString(pick(genWrap))
		}
		b.WriteString(pick(genSchemes))
		b.WriteString(pick(genAuth))
		if r.IntN(4) == 0 {
			b.WriteString(pick(genUser))
		}
		b.WriteString(pick(genHost))
		if r.IntN(3) == 0 {
			b.WriteString(pick(genPort))
		}
		for k := r.IntN(4); k > 0; k-- {
			b.WriteString(pick(genPath))
		}
		if r.IntN(3) == 0 {
			b.WriteString(pick(genQuery))
		}
		if r.IntN(4) == 0 {
			b.WriteString(pick(genFrag))
		}
		if r.IntN(8) == 0 {
			b.WriteString(pick(genWrap))
		}
		s := b.String()
		if r.IntN(6) == 0 { // a tab or newline anywhere, between whole characters
			i := r.IntN(len(s) + 1)
			for i < len(s) && !utf8.RuneStart(s[i]) {
				i++
			}
			s = s[:i] + pick([]string{"\t", "\n", "\r"}) + s[i:]
		}
		out = append(out, s)
	}
	return out
}
