package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	luajson "github.com/alicebob/miniredis/v2/gopher-json"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"
	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"

	"github.com/alicebob/miniredis/v2"
)

// luaRedis runs the limiter's Lua scripts in this process, in ONE Lua state kept for the
// whole run (as Redis keeps one), with redis.call handed to miniredis's own command
// implementations (Server().Dispatch, the path miniredis's EVAL takes for redis.call, minus
// the connection). It is a redis.Scripter: the limiter calls it as it calls a Redis client.
//
// Why: miniredis's EVAL builds a fresh Lua state for every call, opens seven libraries in
// it and runs its global-variable guard before the script itself, and the call crosses a
// TCP connection twice; the profile in docs/benchmarks.md puts that at most of a decision's
// time. The script source, its keys and arguments, the commands it runs, the Lua
// interpreter (gopher-lua, the one miniredis embeds) and the data in miniredis are the
// same, so the decisions are too: TestLuaHostsAgree replays every shipped scenario through
// both hosts and requires the same outcomes, levels, peeks and key statistics.
//
// Not safe for concurrent use: the engine decides one call at a time.
type luaRedis struct {
	mr      *miniredis.Miniredis
	L       *lua.LState
	scripts map[string]*lua.FunctionProto // by SHA-1, as EVALSHA names them
	// One peer and one buffer for every command a script runs.
	peer *server.Peer
	out  bytes.Buffer
	w    *bufio.Writer
	r    *bufio.Reader
	args []string
	// keys are the running script's KEYS; written collects those a write command named.
	keys    []string
	written []string
}

var _ redis.Scripter = (*luaRedis)(nil)

func newLuaRedis(mr *miniredis.Miniredis) (*luaRedis, error) {
	h := &luaRedis{mr: mr, scripts: map[string]*lua.FunctionProto{}}
	h.w = bufio.NewWriter(&h.out)
	h.r = bufio.NewReader(&h.out)
	h.peer = server.NewPeer(h.w)
	L, err := h.newState()
	if err != nil {
		return nil, err
	}
	h.L = L
	return h, nil
}

// newState opens the libraries miniredis opens for a script (and cjson), the redis module
// with call and pcall, and the guard that refuses new globals, as Redis does: a script
// cannot leave state behind for the next one.
func (h *luaRedis) newState() (*lua.LState, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.CoroutineLibName, lua.OpenCoroutine},
		{lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath},
		{lua.DebugLibName, lua.OpenDebug},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			L.Close()
			return nil, fmt.Errorf("opening Lua library %q: %w", lib.name, err)
		}
	}
	luajson.Preload(L)
	mod := L.NewTable()
	mod.RawSetString("call", L.NewFunction(h.call(true)))
	mod.RawSetString("pcall", L.NewFunction(h.call(false)))
	mod.RawSetString("status_reply", L.NewFunction(statusReply))
	mod.RawSetString("error_reply", L.NewFunction(errorReply))
	L.SetGlobal("redis", mod)
	L.SetGlobal("server", mod)
	if err := L.DoString(`cjson = require("json")` + "\n" + guardGlobals); err != nil {
		L.Close()
		return nil, fmt.Errorf("preparing the Lua state: %w", err)
	}
	return L, nil
}

// guardGlobals is miniredis's guard, word for word: creating a global, or reading one that
// does not exist, is an error in a script (as in Redis), and debug is gone. KEYS and ARGV
// are set raw, past the guard.
const guardGlobals = `
local dbg=debug
local mt = {}
setmetatable(_G, mt)
mt.__newindex = function (t, n, v)
  if dbg.getinfo(2) then
    local w = dbg.getinfo(2, "S").what
    if w ~= "C" then
      error("Script attempted to create global variable '"..tostring(n).."'", 2)
    end
  end
  rawset(t, n, v)
end
mt.__index = function (t, n)
  if dbg.getinfo(2) and dbg.getinfo(2, "S").what ~= "C" then
    error("Script attempted to access nonexistent global variable '"..tostring(n).."'", 2)
  end
  return rawget(t, n)
end
debug = nil
`

// close releases the Lua state.
func (h *luaRedis) close() { h.L.Close() }

func (h *luaRedis) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	sha, err := h.load(script)
	if err != nil {
		return redis.NewCmdResult(nil, err)
	}
	return h.EvalSha(ctx, sha, keys, args...)
}

func (h *luaRedis) EvalSha(_ context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	proto, ok := h.scripts[sha]
	if !ok {
		return redis.NewCmdResult(nil, redisError("NOSCRIPT No matching script. Please use EVAL."))
	}
	argv := make([]string, len(args))
	for i, a := range args {
		s, err := argString(a)
		if err != nil {
			return redis.NewCmdResult(nil, err)
		}
		argv[i] = s
	}
	return redis.NewCmdResult(h.run(proto, keys, argv))
}

func (h *luaRedis) EvalRO(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	return h.Eval(ctx, script, keys, args...)
}

func (h *luaRedis) EvalShaRO(ctx context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	return h.EvalSha(ctx, sha, keys, args...)
}

func (h *luaRedis) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	out := make([]bool, len(hashes))
	for i, sha := range hashes {
		_, out[i] = h.scripts[strings.ToLower(sha)]
	}
	cmd := redis.NewBoolSliceCmd(ctx)
	cmd.SetVal(out)
	return cmd
}

func (h *luaRedis) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	cmd := redis.NewStringCmd(ctx)
	sha, err := h.load(script)
	cmd.SetVal(sha)
	cmd.SetErr(err)
	return cmd
}

// load compiles a script once and files it under its SHA-1.
func (h *luaRedis) load(script string) (string, error) {
	sum := sha1.Sum([]byte(script))
	sha := hex.EncodeToString(sum[:])
	if _, ok := h.scripts[sha]; ok {
		return sha, nil
	}
	chunk, err := parse.Parse(strings.NewReader(script), "@user_script")
	if err != nil {
		return "", redisError("ERR Error compiling script: " + err.Error())
	}
	proto, err := lua.Compile(chunk, "@user_script")
	if err != nil {
		return "", redisError("ERR Error compiling script: " + err.Error())
	}
	h.scripts[sha] = proto
	return sha, nil
}

// run calls a compiled script with KEYS and ARGV, and converts what it returns as Redis
// does: numbers to integers (truncated), strings to bulk strings, tables to arrays up to the
// first nil, {err=...} and {ok=...} to an error and a status, false and nil to nil.
func (h *luaRedis) run(proto *lua.FunctionProto, keys, argv []string) (interface{}, error) {
	L := h.L
	h.keys, h.written = keys, h.written[:0]
	L.G.Global.RawSetString("KEYS", stringTable(L, keys))
	L.G.Global.RawSetString("ARGV", stringTable(L, argv))
	L.Push(L.NewFunctionFromProto(proto))
	err := L.PCall(0, 1, nil)
	defer L.SetTop(0)
	if err != nil {
		return nil, redisError("ERR Error running script: " + err.Error())
	}
	v := toRedis(L, L.Get(-1))
	switch v := v.(type) {
	case nil:
		return nil, redis.Nil
	case error:
		return nil, v
	}
	return v, nil
}

// Written lists the keys of the last script call that a write command named (SET, DEL,
// PEXPIRE, ...): the engine reads their TTLs to expire them on time.
func (h *luaRedis) Written() []string { return h.written }

// call is redis.call (failFast) or redis.pcall: it runs one command through miniredis's
// dispatcher, as miniredis's EVAL does, and converts the reply to Lua the same way.
func (h *luaRedis) call(failFast bool) lua.LGFunction {
	return func(L *lua.LState) int {
		top := L.GetTop()
		if top == 0 {
			L.RaiseError("Please specify at least one argument for this redis lib call")
			return 0
		}
		h.args = h.args[:0]
		for i := 1; i <= top; i++ {
			switch a := L.Get(i).(type) {
			case lua.LNumber:
				h.args = append(h.args, a.String())
			case lua.LString:
				h.args = append(h.args, string(a))
			default:
				L.RaiseError("Lua redis lib command arguments must be strings or integers")
				return 0
			}
		}
		h.noteWrites(h.args)
		res, err := h.dispatch(h.args)
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "ERR unknown command") {
				msg = "ERR Unknown Redis command called from script"
			}
			if failFast {
				L.RaiseError("%s", msg)
				return 0
			}
			t := L.CreateTable(0, 1)
			t.RawSetString("err", lua.LString(msg))
			L.Push(t)
			return 1
		}
		L.Push(toLua(L, res))
		return 1
	}
}

// noteWrites remembers the script's keys that a write command names.
func (h *luaRedis) noteWrites(args []string) {
	if h.mr.IsReadOnlyCommand(args[0]) {
		return
	}
	for _, a := range args[1:] {
		if slices.Contains(h.keys, a) && !slices.Contains(h.written, a) {
			h.written = append(h.written, a)
		}
	}
}

// dispatch runs one command on miniredis and parses its reply.
func (h *luaRedis) dispatch(args []string) (interface{}, error) {
	h.out.Reset()
	h.mr.Server().Dispatch(h.peer, args)
	if err := h.w.Flush(); err != nil {
		return nil, err
	}
	h.r.Reset(&h.out)
	return server.ParseReply(h.r)
}

// toLua converts a command's reply as miniredis's EVAL does: nil to false, integers to
// numbers, bulk strings to strings, a status to {ok=...}, arrays to tables.
func toLua(L *lua.LState, res interface{}) lua.LValue {
	switch r := res.(type) {
	case nil:
		return lua.LFalse
	case int:
		return lua.LNumber(r)
	case int64:
		return lua.LNumber(r)
	case string:
		return lua.LString(r)
	case []byte:
		return lua.LString(r)
	case server.Simple:
		// A table of one field, sized so: L.NewTable reserves 32 array slots and a 32-entry
		// map, about 2 KB for every SET's "OK", which was a third of all a run allocated.
		t := L.CreateTable(0, 1)
		t.RawSetString("ok", lua.LString(r))
		return t
	case []interface{}:
		t := L.CreateTable(len(r), 0)
		for _, e := range r {
			t.Append(toLua(L, e))
		}
		return t
	}
	return lua.LString(fmt.Sprint(res))
}

// toRedis converts a script's value to what go-redis makes of the reply Redis sends for it:
// int64, string, []interface{}, nil, or an error.
func toRedis(L *lua.LState, v lua.LValue) interface{} {
	switch t := v.(type) {
	case lua.LBool:
		if t {
			return int64(1)
		}
		return nil
	case lua.LNumber:
		return int64(t)
	case lua.LString:
		return string(t)
	case *lua.LTable:
		if e := t.RawGetString("err"); e != lua.LNil {
			return redisError(e.String())
		}
		if ok := t.RawGetString("ok"); ok != lua.LNil {
			return ok.String()
		}
		var out []interface{}
		for j := 1; ; j++ {
			e := L.GetTable(t, lua.LNumber(j))
			if e == lua.LNil {
				break
			}
			out = append(out, toRedis(L, e))
		}
		if out == nil {
			out = []interface{}{}
		}
		return out
	}
	return nil
}

func stringTable(L *lua.LState, ss []string) *lua.LTable {
	t := L.CreateTable(len(ss), 0)
	for _, s := range ss {
		t.Append(lua.LString(s))
	}
	return t
}

func statusReply(L *lua.LState) int {
	t := L.NewTable()
	t.RawSetString("ok", lua.LString(L.CheckString(1)))
	L.Push(t)
	return 1
}

// errorReply is redis.error_reply as miniredis writes it: a leading '-' dropped, "ERR "
// added to a message of one word.
func errorReply(L *lua.LState) int {
	parts := strings.SplitN(L.CheckString(1), " ", 2)
	parts[0] = strings.TrimPrefix(parts[0], "-")
	msg := "ERR " + parts[0]
	if len(parts) == 2 {
		msg = parts[0] + " " + parts[1]
	}
	t := L.NewTable()
	t.RawSetString("err", lua.LString(msg))
	L.Push(t)
	return 1
}

// argString writes an argument as go-redis sends it.
func argString(a interface{}) (string, error) {
	switch v := a.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case int:
		return strconv.Itoa(v), nil
	case int32:
		return strconv.FormatInt(int64(v), 10), nil
	case int8, int16:
		return fmt.Sprint(v), nil
	case uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v), nil
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 64), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		if v {
			return "1", nil
		}
		return "0", nil
	}
	return "", fmt.Errorf("script argument of type %T: not supported by the in-process Lua host", a)
}

// redisError is an error reply, as go-redis reports one (redis.HasErrorPrefix sees it:
// NOSCRIPT makes the limiter's script fall back to EVAL).
type redisError string

func (e redisError) Error() string { return string(e) }

// RedisError marks it as a reply from Redis, not a network error.
func (redisError) RedisError() {}

var _ redis.Error = redisError("")
