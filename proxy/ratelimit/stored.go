package ratelimit

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// tripleSize is the length of three integers in tokenbucket.lua's binary form (its FORMAT,
// struct's '>i8i8i8': big-endian, 8 bytes each): a stored bucket, and one key's arguments.
const tripleSize = 24

// appendTriple appends three integers in the script's binary form.
func appendTriple(dst []byte, a, b, c int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(a))
	dst = binary.BigEndian.AppendUint64(dst, uint64(b))
	return binary.BigEndian.AppendUint64(dst, uint64(c))
}

// readTriple reads the three integers at the start of b (at least tripleSize bytes).
func readTriple[T string | []byte](b T) (x, y, z int64) {
	return readInt(b), readInt(b[8:]), readInt(b[16:])
}

// readInt reads one big-endian 8-byte integer at the start of b.
func readInt[T string | []byte](b T) int64 {
	_ = b[7]
	return int64(uint64(b[7]) | uint64(b[6])<<8 | uint64(b[5])<<16 | uint64(b[4])<<24 |
		uint64(b[3])<<32 | uint64(b[2])<<40 | uint64(b[1])<<48 | uint64(b[0])<<56)
}

// ScriptReply reads the script's reply: one string of big-endian 8-byte integers, allowed (1
// or 0), Redis's time in µs, then each bucket's level after the decision. An error reply
// (or a failed call) is returned as the error.
func ScriptReply(cmd *redis.Cmd) ([]int64, error) {
	raw, err := cmd.Text()
	if err != nil {
		return nil, err
	}
	return readReply(raw, nil)
}

// readReply appends the integers of the script's reply to dst.
func readReply(raw string, dst []int64) ([]int64, error) {
	if len(raw)%8 != 0 || len(raw) < 16 {
		return nil, fmt.Errorf("a reply of %d bytes: want 8 per integer, and at least 2 integers", len(raw))
	}
	for i := 0; i < len(raw); i += 8 {
		dst = append(dst, readInt(raw[i:]))
	}
	return dst, nil
}

// ScriptArgs is the script's one argument (ARGV[1]) for the integers given, three per key:
// maxTokens, refill period in µs, cost in tokens. For callers that run ScriptSource themselves
// (tests of stores); the Limiter builds its own. It panics when len(v) is not a multiple of 3.
func ScriptArgs(v ...int64) []byte {
	if len(v)%3 != 0 {
		panic("ratelimit.ScriptArgs: three integers per key")
	}
	b := make([]byte, 0, len(v)*8)
	for i := 0; i < len(v); i += 3 {
		b = appendTriple(b, v[i], v[i+1], v[i+2])
	}
	return b
}

// ReadScriptArgs reads what ScriptArgs writes, for a call with n keys: three integers per
// key. ok is false when args are not the script's one argument of 24 bytes per key (another
// script's, a malformed call).
func ReadScriptArgs(args []interface{}, n int) (v []int64, ok bool) {
	raw, ok := scriptArg(args)
	if !ok || len(args) != 1 || len(raw) != tripleSize*n {
		return nil, false
	}
	v = make([]int64, 0, 3*n)
	for i := range n {
		a, b, c := readTriple(raw[tripleSize*i:])
		v = append(v, a, b, c)
	}
	return v, true
}

// scriptArg is the script's one argument (the first of args; none is empty), as go-redis
// sends it: bytes or a string. ok is false for any other type.
func scriptArg(args []interface{}) (raw []byte, ok bool) {
	if len(args) == 0 {
		return nil, true
	}
	switch a := args[0].(type) {
	case []byte:
		return a, true
	case string:
		return []byte(a), true
	}
	return nil, false
}

// encodeStored is the value tokenbucket.lua stores for a bucket: its level in token-µs, the
// Redis time (µs) it was computed at, and the refill period (µs) it is scaled by.
func encodeStored(level, at, period int64) string {
	return string(appendTriple(make([]byte, 0, tripleSize), level, at, period))
}

// decodeStored reads what encodeStored writes; ok is false for a value of another length,
// which the script reads as a full bucket.
func decodeStored(raw string) (level, at, period int64, ok bool) {
	if len(raw) != tripleSize {
		return 0, 0, 0, false
	}
	level, at, period = readTriple(raw)
	return level, at, period, true
}

// StoredLevel is a bucket's effective level at nowUS, in token-microseconds (tokens × refill
// period in µs), read from the value tokenbucket.lua stores: the Go reading of the script's
// format, kept beside the script (TestStoredLevelMatchesScript holds the two together). found
// false (no key) is a full bucket. A value the script could not have written gives -1, never
// equal to a real level.
func StoredLevel(raw string, found bool, maxTokens, periodUS, nowUS int64) int64 {
	capacity := maxTokens * periodUS
	if !found {
		return capacity
	}
	level, at, period, ok := decodeStored(raw)
	if !ok || period <= 0 || level < 0 {
		return -1
	}
	if period != periodUS {
		// The refill period changed since: the same fraction of a token, rounded down — in
		// doubles, operation for operation as the script computes it.
		level = int64(math.Floor(float64(level) / float64(period) * float64(periodUS)))
	}
	level = min(level, capacity)               // capacity lowered since
	elapsed := min(max(nowUS-at, 0), periodUS) // a clock step back refills nothing; a period refills all
	return min(capacity, level+elapsed*maxTokens)
}

// StoredValue describes a stored bucket for people (logs, test failures, reports): "level
// <token-µs> at <µs> period <µs>", or the raw bytes quoted when the script did not write them.
func StoredValue(raw string) string {
	level, at, period, ok := decodeStored(raw)
	if !ok {
		return strconv.Quote(raw)
	}
	return "level " + strconv.FormatInt(level, 10) + " at " + strconv.FormatInt(at, 10) + " period " + strconv.FormatInt(period, 10)
}
