package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStoredLevelMatchesScript: StoredLevel reads a bucket as the script does. Random
// decisions at random times: the levels the script reports (after each decision) equal
// StoredLevel of the stored value at that moment, and a moment later the script's own reading
// (a rejected probe returns its levels) equals StoredLevel at the later time. On miniredis
// the script packs values in plain Lua, on redis-server with struct: both must agree with Go.
func TestStoredLevelMatchesScript(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t, false)
			rng := rand.New(rand.NewPCG(1, 2))
			const key = "k"
			for i := range 300 {
				maxTokens, periodUS := int64(1+rng.IntN(10)), int64(1+rng.IntN(5))*int64(time.Second/time.Microsecond)
				if i%50 == 0 && i > 0 {
					maxTokens++ // the config changes under a live key now and then
				}
				st.advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
				cost := int64(1 + rng.IntN(int(maxTokens)))
				res, err := ScriptReply(script.Run(t.Context(), st.client, []string{key}, ScriptArgs(maxTokens, periodUS, cost)))
				if err != nil {
					t.Fatal(err)
				}
				raw, gerr := st.client.Get(t.Context(), key).Result()
				found := gerr == nil
				// Admitted: the level the script left; rejected: the level it read, at its time.
				if got := StoredLevel(raw, found, maxTokens, periodUS, res[1]); got != res[2] {
					t.Fatalf("step %d (allowed %d): the script's level is %d, StoredLevel reads %d from %s", i, res[0], res[2], got, StoredValue(raw))
				}
			}
		})
	}
	if got := StoredLevel("", false, 3, 10, 0); got != 30 {
		t.Errorf("a missing key: %d, want a full bucket (30)", got)
	}
	if got := StoredLevel("1 2 3", true, 3, 10, 0); got != -1 {
		t.Errorf("a value the script never writes: %d, want -1", got)
	}
	for raw, want := range map[string]string{encodeStored(5, 1796000000000000, 7): "level 5 at 1796000000000000 period 7", "1 2 3": `"1 2 3"`} {
		if got := StoredValue(raw); got != want {
			t.Errorf("StoredValue(%q) = %q, want %q", raw, got, want)
		}
	}
}

// TestStoredFormat: the script reads what encodeStored writes and writes what decodeStored
// reads, at the edges of bytes and by the 2^53 bound, with struct (redis-server) and with the
// plain-Lua pack (miniredis). Each case stores a level with a time in the future (so nothing
// refills) and asks for nothing (cost 0): the script must report the level unchanged and
// store it again at its own time. Every level is far enough below its capacity that the key
// lives long past the GET (its TTL is its time to full).
func TestStoredFormat(t *testing.T) {
	const maxExactInt = 1<<53 - 1
	cases := map[string]struct {
		reason           string
		level, maxTokens int64
		period           int64
	}{
		"Empty":        {reason: "a zero level", level: 0, maxTokens: 1, period: int64(time.Hour / time.Microsecond)},
		"OneByte":      {reason: "the top of the low byte", level: 255, maxTokens: 1, period: 1e9},
		"TwoBytes":     {reason: "a carry into the second byte", level: 256, maxTokens: 1, period: 1e9},
		"Word":         {reason: "the top of the low 32 bits", level: 1<<32 - 1, maxTokens: 1, period: 1e11},
		"HighWord":     {reason: "a carry into the high 32 bits", level: 1 << 32, maxTokens: 1, period: 1e11},
		"NearMaxExact": {reason: "a level by 2^53 and the largest period doubles hold exactly", level: maxExactInt - 1e10, maxTokens: 1, period: maxExactInt},
		"LongPeriod":   {reason: "a period of 8760 h, the CRD's bound", level: 12345678901, maxTokens: 1000, period: int64(8760 * time.Hour / time.Microsecond)},
	}
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t, false)
			for name, tc := range cases {
				t.Run(name, func(t *testing.T) {
					key := "format:" + name
					future := time.Now().Add(24 * time.Hour).UnixMicro() // after both clocks: nothing refills
					if err := st.client.Set(t.Context(), key, encodeStored(tc.level, future, tc.period), 0).Err(); err != nil {
						t.Fatal(err)
					}
					res, err := ScriptReply(script.Run(t.Context(), st.client, []string{key}, ScriptArgs(tc.maxTokens, tc.period, 0)))
					if err != nil {
						t.Fatalf("%s: %v", tc.reason, err)
					}
					raw, err := st.client.Get(t.Context(), key).Result()
					if err != nil {
						t.Fatalf("%s: GET: %v", tc.reason, err)
					}
					type stored struct{ Level, At, Period int64 }
					level, at, period, ok := decodeStored(raw)
					want := []int64{1, res[1], tc.level}
					if diff := cmp.Diff(want, res); diff != "" {
						t.Errorf("%s: the script's reply -want +got:\n%s", tc.reason, diff)
					}
					if diff := cmp.Diff(stored{tc.level, res[1], tc.period}, stored{level, at, period}); diff != "" || !ok {
						t.Errorf("%s: the stored value %s (decodes: %t) -want +got:\n%s", tc.reason, StoredValue(raw), ok, diff)
					}
				})
			}
		})
	}
}

// TestScriptRefusesOtherArguments: the script answers arguments that are not its one binary
// argument with an error naming what it takes (the LocalStore's answer too), and writes
// nothing: decimal integers as earlier versions sent them, a length that fits no key count.
func TestScriptRefusesOtherArguments(t *testing.T) {
	cases := map[string]struct {
		reason string
		args   []interface{}
		want   string
	}{
		"Decimal": {reason: "three decimal integers, as before", args: []interface{}{10, 1000000, 1}, want: "ERR the limiter's script takes one argument of 24 bytes per key: 2 bytes for 1 keys"},
		"Short":   {reason: "a byte short", args: []interface{}{ScriptArgs(10, 1000000, 1)[:23]}, want: "ERR the limiter's script takes one argument of 24 bytes per key: 23 bytes for 1 keys"},
		"None":    {reason: "no argument", args: nil, want: "ERR the limiter's script takes one argument of 24 bytes per key: 0 bytes for 1 keys"},
	}
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t, false)
			for name, tc := range cases {
				t.Run(name, func(t *testing.T) {
					err := script.Run(t.Context(), st.client, []string{"k"}, tc.args...).Err()
					got := fmt.Sprint(err)
					if !strings.HasPrefix(got, tc.want) {
						t.Errorf("%s: got %q, want it to start with %q", tc.reason, got, tc.want)
					}
					if n, err := st.client.Exists(t.Context(), "k").Result(); err != nil || n != 0 {
						t.Errorf("%s: the key exists (%d, %v): the script wrote", tc.reason, n, err)
					}
				})
			}
		})
	}
	s := NewLocalStore(LocalOptions{})
	for name, tc := range cases {
		if name == "Decimal" {
			continue // the LocalStore refuses three arguments before it measures the first
		}
		if got := fmt.Sprint(script.Run(t.Context(), s, []string{"k"}, tc.args...).Err()); got != tc.want {
			t.Errorf("LocalStore, %s: got %q, want %q", tc.reason, got, tc.want)
		}
	}
}

// FuzzStored: the readings of the script's binary values never panic on any bytes; a stored
// value of another length is never a level, one of the right length reads back to the same
// bytes; a reply is read only when it holds whole integers.
func FuzzStored(f *testing.F) {
	f.Add("", int64(1), int64(1_000_000), int64(0))
	f.Add(encodeStored(5, 1796000000000000, 7), int64(3), int64(1_000_000), int64(1796000000000001))
	f.Add(encodeStored(-1, -1, -1), int64(0), int64(0), int64(-1))
	f.Add("1 2 3", int64(3), int64(10), int64(0))
	f.Fuzz(func(t *testing.T, raw string, maxTokens, periodUS, nowUS int64) {
		level := StoredLevel(raw, true, maxTokens, periodUS, nowUS)
		if len(raw) != tripleSize && level != -1 {
			t.Errorf("StoredLevel of %d bytes = %d, want -1: only the script's 24 bytes are a level", len(raw), level)
		}
		if l, at, p, ok := decodeStored(raw); ok != (len(raw) == tripleSize) || ok && encodeStored(l, at, p) != raw {
			t.Errorf("decodeStored(%q) = %d, %d, %d, %t: not the bytes back", raw, l, at, p, ok)
		}
		if r, err := readReply(raw, nil); (err == nil) != (len(raw) >= 16 && len(raw)%8 == 0) || err == nil && len(r) != len(raw)/8 {
			t.Errorf("readReply of %d bytes: %d integers, %v", len(raw), len(r), err)
		}
		if StoredValue(raw) == "" {
			t.Error("StoredValue says nothing")
		}
	})
}
