package ratelimit

import "time"

// Record is one line of the proxy's decision log, and the trace format the simulator replays:
// one JSON-RPC call on the MCP endpoint. Every call is logged, also those no bucket matched
// (a what-if with a new limit must see them).
type Record struct {
	// Time is Redis's clock at the decision when the limiter decided, else the proxy's.
	Time time.Time `json:"time"`
	// Method and Name (tool or prompt name, canonical resource URI) of the call.
	Method string `json:"method"`
	Name   string `json:"name,omitempty"`
	// NameTruncated marks a name cut to its first 8 KiB.
	NameTruncated bool `json:"nameTruncated,omitempty"`
	// User is the keyed hash of the caller's id (HashUser): the same on every replica that
	// shares the key, never the id itself. Empty for anonymous callers.
	User string `json:"user,omitempty"`
	// Tier is the tier the caller was resolved to (ResolveTier), empty for none: a what-if
	// replay decides the call in the same tier.
	Tier string `json:"tier,omitempty"`
	// Cost is the tokens the call asked (before the entry's weight).
	Cost int32 `json:"cost"`
	// Decision is the call's outcome (OutcomeUnlimited for a call no limit applies to).
	Decision Outcome `json:"decision"`
	// Limit names the bucket that rejected (BucketID.String).
	Limit string `json:"limit,omitempty"`
	// RetryAfterMs is the exact wait the limiter computed, for rejections.
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
	// Batch is the size of the JSON-RPC batch the call came in, 0 when alone.
	Batch int `json:"batch,omitempty"`
}
