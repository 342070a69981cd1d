package ratelimit

import (
	"math"
	"strconv"
	"strings"
)

// StoredLevel is a bucket's effective level at nowUS, in token-microseconds (tokens × refill
// period in µs), read from the value tokenbucket.lua stores, "<level> <time> <period>": the
// Go reading of the script's format, kept beside the script (TestStoredLevelMatchesScript
// holds the two together). found false (no key) is a full bucket. A value the script could
// not have written gives -1, never equal to a real level.
func StoredLevel(raw string, found bool, maxTokens, periodUS, nowUS int64) int64 {
	capacity := maxTokens * periodUS
	if !found {
		return capacity
	}
	f := strings.Fields(raw)
	if len(f) != 3 {
		return -1
	}
	level, err1 := strconv.ParseInt(f[0], 10, 64)
	at, err2 := strconv.ParseInt(f[1], 10, 64)
	period, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || period <= 0 || level < 0 {
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
