package enforce

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/mcp"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Rejections in two forms (responses.toolRejection):
//
//   - Error, the default: a JSON-RPC error, code 429, with the data the caller passes
//     (retryAfterSeconds, retryAfterMs, limit, scope), HTTP rejectStatus.
//   - ToolResult: a rejected tools/call with an id is answered HTTP 200 with a CallToolResult,
//     isError true, whose text says which limit was reached and when to retry, and whose
//     _meta holds the same data. No MCP SDK hands a 429's body, or a JSON-RPC error, to the
//     model; a tool result is what an agent reads, and it can then wait or do something else.
//
// prompts/get and resources/read keep the error form in both: their results have no isError,
// so a rejection could not be told from content. A tools/call sent without an id keeps it too:
// a result must echo an id, and nobody waits for one. So does a client that does not read its
// POST's response: only a Streamable HTTP client does, and it says so by listing
// text/event-stream in Accept (the transport requires it). A legacy HTTP+SSE client
// (2024-11-05) reads answers from its event stream and only the status of its POSTs: a 200 it
// would take for "accepted" and wait for an answer that never comes, where a 429 fails the
// call at once.
//
// The answer is application/json in both forms, as every refusal the proxy writes: a
// Streamable HTTP client accepts it beside text/event-stream, and a stream would only wrap the
// same one message.

// writeRejection answers a body the limiter refused. data is the error's data and a tool
// result's _meta; text is a tool result's text (batch: the call was one of a batch). The
// Retry-After and RateLimit headers are set already.
func writeRejection(w http.ResponseWriter, r *http.Request, lim *Limits, body mcp.Body, data any, text func(batch bool) string) {
	status := rejectStatus(lim)
	if lim.Responses.ToolRejection != v1alpha1.ToolRejectionToolResult || !acceptsEventStream(r.Header) {
		writeJSON(w, status, nil, errorBody(body, 429, rateLimitExceeded, data))
		return
	}
	if !body.Batch {
		if len(body.Messages) == 1 && isToolRequest(body.Messages[0]) {
			writeJSON(w, http.StatusOK, nil, mcp.ToolErrorResult(body.Messages[0].ID, text(false), data))
			return
		}
		writeJSON(w, status, nil, errorBody(body, 429, rateLimitExceeded, data))
		return
	}
	// A batch is refused whole; each of its answers takes the form of its own method.
	results := false
	b := mcp.BatchResponse(body.Messages, func(b []byte, m mcp.Message) []byte {
		if isToolRequest(m) {
			results = true
			return mcp.AppendToolErrorResult(b, m.ID, text(true), data)
		}
		return mcp.AppendError(b, m.ID, 429, rateLimitExceeded, data)
	})
	if b == nil { // notifications only: answered as the error form answers them
		writeJSON(w, status, nil, errorBody(body, 429, rateLimitExceeded, data))
		return
	}
	if results {
		// A tool result under a 429 would be dropped by the clients it is meant for.
		status = http.StatusOK
	}
	writeJSON(w, status, nil, b)
}

const rateLimitExceeded = "Rate limit exceeded"

// rateLimited is the data of a rate-limited call's error, and its tool result's _meta. A
// struct rather than a map: every rejection of a flood marshals it. Fields in name order, as
// a map's keys are written.
type rateLimited struct {
	Limit             string          `json:"limit"`
	RetryAfterMs      int64           `json:"retryAfterMs"` // the exact wait, rounded up (SEP-3304's draft)
	RetryAfterSeconds int64           `json:"retryAfterSeconds"`
	Scope             ratelimit.Scope `json:"scope"`
}

// acceptsEventStream reports whether Accept lists text/event-stream: a Streamable HTTP client,
// which reads the answer to its POST.
func acceptsEventStream(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// isToolRequest reports whether m is a tools/call that expects an answer.
func isToolRequest(m mcp.Message) bool {
	return m.Kind == mcp.KindRequest && m.ID != nil && m.Method == ratelimit.MethodToolsCall
}

// rejectedText tells an agent which limit refused its call, why, and when to retry:
//
//	Rate limit reached for web_search (20 calls per minute per user). Try again in 12 s.
//
// Everything in it comes from the config (the bucket) and the wait, never from the request.
// secs is the wait in whole seconds, rounded up, as Retry-After says it.
func rejectedText(rej *ratelimit.BucketState, secs int64, batch bool) string {
	var b strings.Builder
	b.WriteString("Rate limit reached for ")
	b.WriteString(limitSubject(rej.BucketID))
	b.WriteString(" (")
	b.WriteString(limitRate(rej, batch))
	b.WriteString("). ")
	if batch {
		b.WriteString("This call was sent in a batch, which is refused as a whole. ")
	}
	b.WriteString("Try again in ")
	b.WriteString(waitText(secs))
	b.WriteString(".")
	return b.String()
}

// neverAdmittedText tells an agent that no wait admits its call (a cost above a bucket's
// capacity), so that it does not retry.
func neverAdmittedText(e *ratelimit.RequestError, names policyNames, batch bool) string {
	what := "this call"
	if batch {
		what = "the batch this call was sent in"
	}
	if e.Bucket == "" {
		return "Rate limits cannot admit " + what + ": " + e.Reason + ". Retrying will not help."
	}
	return "Rate limit " + names.get(e.ID) + " can never admit " + what + ": " + e.Reason + ". Retrying will not help."
}

// limitSubject names what a bucket limits, for a person: the tool by its name, the others
// by kind and name, server-level buckets as every call.
func limitSubject(id ratelimit.BucketID) string {
	switch id.Kind {
	case "":
		return "calls to this server"
	case "tool":
		return id.Name
	}
	return id.Kind + " " + id.Name
}

// limitRate is a bucket's rate and scope, for a person: "20 calls per minute per user",
// "100 calls per hour, shared by all users", "200 calls per hour per user on tier pro". A
// bucket is counted in calls when the call took one token of it; otherwise in tokens, with
// what this call (or its batch) took.
func limitRate(rej *ratelimit.BucketState, batch bool) string {
	unit := "call"
	if rej.Cost != 1 || batch {
		unit = "token"
	}
	var b strings.Builder
	b.WriteString(strconv.FormatInt(int64(rej.MaxTokens), 10))
	b.WriteString(" ")
	b.WriteString(plural(int64(rej.MaxTokens), unit))
	b.WriteString(" per ")
	b.WriteString(periodText(rej.RefillPeriod))
	switch {
	case rej.Scope == ratelimit.ScopeShared:
		b.WriteString(", shared by all users")
	case rej.Tier != "":
		b.WriteString(" per user on tier ")
		b.WriteString(rej.Tier)
	default:
		b.WriteString(" per user")
	}
	if unit == "token" {
		if batch {
			b.WriteString("; the batch takes ")
		} else {
			b.WriteString("; this call takes ")
		}
		b.WriteString(strconv.FormatInt(rej.Cost, 10))
	}
	return b.String()
}

// periodText is a refill period in the largest whole unit: "minute", "2 hours", "90 seconds";
// a period of no whole second as Go writes it ("1.5s").
func periodText(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if d >= u.d && d%u.d == 0 {
			if n := int64(d / u.d); n > 1 {
				return strconv.FormatInt(n, 10) + " " + u.name + "s"
			}
			return u.name
		}
	}
	return d.String()
}

// waitText is a wait in whole seconds as a person reads it: seconds up to two minutes, then
// minutes up to two hours, then hours, each rounded up (never earlier than Retry-After).
func waitText(secs int64) string {
	switch {
	case secs < 120:
		return strconv.FormatInt(secs, 10) + " s"
	case secs < 2*3600:
		return strconv.FormatInt((secs+59)/60, 10) + " min"
	}
	return strconv.FormatInt((secs+3599)/3600, 10) + " h"
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
