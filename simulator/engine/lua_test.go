package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// TestLuaHostMatchesEval runs small scripts in the in-process host and through miniredis's
// own EVAL on the same data: the same value, or an error both times. The value conversions
// (Lua to Redis and back), redis.call and redis.pcall, the global guard and the libraries
// are what the limiter's script relies on.
func TestLuaHostMatchesEval(t *testing.T) {
	cases := map[string]struct {
		reason string
		script string
		keys   []string
		args   []interface{}
		want   interface{} // the host's value; nil when it must fail
	}{
		"Numbers": {reason: "numbers become integers, truncated", script: "return {1, 2.9, -3.7}", want: []interface{}{int64(1), int64(2), int64(-3)}},
		"KeysAndArgv": {
			reason: "KEYS and ARGV are strings, arguments written as go-redis writes them",
			script: "return KEYS[1] .. ':' .. ARGV[1] .. ':' .. ARGV[2]", keys: []string{"k"}, args: []interface{}{int64(42), "x"}, want: "k:42:x",
		},
		"TableStopsAtNil":   {reason: "an array ends at its first nil", script: "return {1, nil, 3}", want: []interface{}{int64(1)}},
		"TrueIsOne":         {reason: "true is the integer 1", script: "return true", want: int64(1)},
		"Status":            {reason: "a status reply is its text", script: "return redis.status_reply('FINE')", want: "FINE"},
		"ErrorReply":        {reason: "an error reply is an error", script: "return redis.error_reply('bad thing')"},
		"SetAndGet":         {reason: "redis.call reaches miniredis's commands", script: "redis.call('SET', KEYS[1], 'v', 'PX', 1000); return redis.call('GET', KEYS[1])", keys: []string{"s"}, want: "v"},
		"MissingIsFalse":    {reason: "a missing value in MGET is false", script: "local v = redis.call('MGET', KEYS[1]); return tostring(v[1])", keys: []string{"none"}, want: "false"},
		"SetReturnsStatus":  {reason: "SET answers a status table", script: "return redis.call('SET', KEYS[1], 'v')['ok']", keys: []string{"t"}, want: "OK"},
		"Time":              {reason: "TIME is miniredis's clock", script: "local t = redis.call('TIME'); return {tonumber(t[1]), tonumber(t[2])}", want: []interface{}{int64(1_700_000_000), int64(123456)}},
		"UnknownCommand":    {reason: "redis.call of an unknown command raises", script: "return redis.call('NOPE')"},
		"PCallCatches":      {reason: "redis.pcall returns the error as a table", script: "local r = redis.pcall('NOPE'); return type(r['err'])", want: "string"},
		"NoNewGlobals":      {reason: "a script may not create a global (state would leak into the next call)", script: "x = 1; return 1"},
		"NoUnknownGlobals":  {reason: "nor read one that does not exist", script: "return y"},
		"NilIsNil":          {reason: "nil is a nil reply", script: "return nil"},
		"NoStruct":          {reason: "there is no struct library: the limiter packs its values in plain Lua here", script: "return type(rawget(_G, 'struct'))", want: "nil"},
		"CharAndByte":       {reason: "string.char and string.byte as the limiter's plain-Lua pack uses them", script: "local a, b = string.byte(string.char(0, 255) .. string.char(7), 2, 3); return a * 256 + b", want: int64(255*256 + 7)},
		"CompileError":      {reason: "a script that does not compile is an error", script: "return ("},
		"ArgumentsAreTyped": {reason: "redis.call takes strings and numbers only", script: "return redis.call('GET', {})"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			mr.SetTime(time.Unix(1_700_000_000, 123456000))
			host, err := newLuaRedis(mr)
			if err != nil {
				t.Fatal(err)
			}
			defer host.close()
			got, gotErr := redis.NewScript(tc.script).Run(t.Context(), host, tc.keys, tc.args...).Result()
			if tc.want == nil {
				if gotErr == nil {
					t.Errorf("%s\nin process: got %#v, want an error", tc.reason, got)
				}
			} else if diff := cmp.Diff(tc.want, got); diff != "" || gotErr != nil {
				t.Errorf("%s\nin process: error %v, -want +got:\n%s", tc.reason, gotErr, diff)
			}

			mr.FlushAll()
			client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			defer func() { _ = client.Close() }()
			eval, evalErr := redis.NewScript(tc.script).Run(t.Context(), client, tc.keys, tc.args...).Result()
			if (evalErr != nil) != (gotErr != nil) || !cmp.Equal(eval, got) {
				t.Errorf("%s\nin process %#v (error %v), miniredis EVAL %#v (error %v)", tc.reason, got, gotErr, eval, evalErr)
			}
		})
	}
}

// TestLuaHostWrites checks that the host tells which of a script's keys a write command
// named (the engine expires them), and answers NOSCRIPT for a script it was never given,
// which makes go-redis send it with EVAL.
func TestLuaHostWrites(t *testing.T) {
	mr := miniredis.RunT(t)
	host, err := newLuaRedis(mr)
	if err != nil {
		t.Fatal(err)
	}
	defer host.close()
	script := redis.NewScript("redis.call('GET', KEYS[1]); redis.call('SET', KEYS[2], 'v'); redis.call('DEL', KEYS[3], KEYS[2]); return 1")
	if err := script.EvalSha(t.Context(), host, []string{"a", "b", "c"}).Err(); !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Errorf("an unknown script: got %v, want NOSCRIPT", err)
	}
	if err := script.Run(t.Context(), host, []string{"a", "b", "c"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "c"}, host.Written()); diff != "" {
		t.Errorf("keys written (GET writes nothing; each key once): -want +got:\n%s", diff)
	}
}
