// Package mcp classifies the JSON-RPC 2.0 messages a client POSTs to an MCP server's Streamable
// HTTP endpoint, so that the proxy can tell which of them a rate limit applies to.
//
// Three methods are limited: tools/call (keyed by params.name), prompts/get (params.name) and
// resources/read (params.uri), whether sent as a request or as a notification; the limiter owns
// that list (ratelimit.IsLimited). Nothing else is: not initialize, server/discover, ping,
// notifications/*, other methods, nor the responses a client sends back to server requests.
// Method names are matched exactly and case-sensitively: "Tools/Call" is not tools/call, and no
// upstream runs it as tools/call.
//
// # Security invariant
//
// Any body that an upstream MCP server would execute as tools/call X (or prompts/get X, or
// resources/read U) is classified by [Parse] as exactly that, or refused: classification is
// never a way around a limit. Parse either returns an [*Error] (the proxy answers the client
// itself and forwards nothing) or returns messages whose Method and Name are what the most
// lenient common upstream decoder, Go's encoding/json, reads from the same bytes. FuzzParse
// checks this against encoding/json on arbitrary input.
//
// encoding/json matches object keys case-insensitively (Unicode simple folding, so "ſ" is an "s"
// and "K", the Kelvin sign, a "k"), keeps the last of duplicate keys, replaces invalid UTF-8
// and lone surrogate escapes with U+FFFD and decodes every escape. So Parse
//   - decodes strings and keys exactly as encoding/json does (escapes, surrogate pairs, U+FFFD);
//   - refuses a body that is not valid UTF-8;
//   - refuses a message or params object with duplicate keys, keys equal under case folding
//     included, and any key that folds to a meaningful key without being it ("Method", "PARAMS",
//     "ID", "Uri", "paramſ"); to cover decoders that also ignore '_' and '-' (encoding/json/v2's
//     case-insensitive mode), "_method" and "json-rpc" count as such keys too;
//   - takes Name from the same key an upstream reads for that method, and refuses a limited
//     call whose name is missing, not a string or empty.
//
// # Decisions
//
//   - A request with "id": null is refused (-32600, echoing the id null): MCP forbids null
//     request ids, and JSON-RPC servers disagree on whether it is a request or a notification.
//     A response may have id null (JSON-RPC's answer to a request whose id could not be read).
//   - A response must have an id and exactly one of result and error; a message with a method
//     and a result or error is refused; an empty method is refused.
//   - Params of methods that are not limited are not inspected.
//   - A structural limit (nesting deeper than [MaxDepth], more than [MaxBatch] messages)
//     stops parsing at once with -32600. Otherwise any syntax error in the body is
//     reported as -32700, in preference to an invalid message found earlier in it.
//   - An invalid batch is refused as a whole with a single Error that echoes no id.
//   - Message.ID and Error.ID are sub-slices of the body passed to Parse, not copies.
package mcp

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// JSON-RPC error codes of an Error.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeHeaderMismatch is MCP's code for Mcp-Method or Mcp-Name headers that disagree with
	// the body (MCP 2026-07-28).
	CodeHeaderMismatch = -32020
)

// Kind of a JSON-RPC message.
type Kind int

const (
	// KindRequest has a method and an id: the server answers it.
	KindRequest Kind = iota + 1
	// KindNotification has a method and no id: the server does not answer it.
	KindNotification
	// KindResponse has a result or an error and no method: the client's answer to a
	// request the server sent.
	KindResponse
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Message is one classified JSON-RPC message.
type Message struct {
	Kind Kind
	// ID is the exact bytes of the id as sent (a number or a string, quotes and escapes
	// included; null only for a response), nil when absent. It is a sub-slice of the body.
	ID json.RawMessage
	// Method is the decoded method; "" for a response.
	Method string
	// Name is params.name (tools/call, prompts/get) or params.uri (resources/read), decoded
	// and never empty for those methods; "" for every other message.
	Name string
	// Limited is true when Method is tools/call, prompts/get or resources/read.
	Limited bool
}

// Body is a classified POST body: one message, or a batch (a JSON array) of them.
type Body struct {
	Batch    bool
	Messages []Message
}

// Error is a classification failure the proxy answers itself: the HTTP status, the JSON-RPC
// error code and message, and the id to echo when one could be read.
type Error struct {
	HTTPStatus int
	Code       int    // CodeParseError, CodeInvalidRequest, CodeInvalidParams or CodeHeaderMismatch
	Message    string // the JSON-RPC error message: "Parse error", "Invalid Request", ...
	// Detail says what exactly is wrong, for logs and for the error's data member. It may
	// quote (truncated) parts of the body.
	Detail string
	// ID is the id to echo, nil when unknown: a parse error, an invalid or ambiguous id, a
	// batch. It is a sub-slice of the body.
	ID json.RawMessage
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("mcp: %s (JSON-RPC %d, HTTP %d)", e.Message, e.Code, e.HTTPStatus)
	}
	return fmt.Sprintf("mcp: %s: %s (JSON-RPC %d, HTTP %d)", e.Message, e.Detail, e.Code, e.HTTPStatus)
}

// Response is the JSON-RPC error object to send back for e, with Detail as its data.
func (e *Error) Response() []byte {
	var data any
	if e.Detail != "" {
		data = e.Detail
	}
	return ErrorResponse(e.ID, e.Code, e.Message, data)
}

func parseError(detail string) *Error {
	return &Error{HTTPStatus: http.StatusBadRequest, Code: CodeParseError, Message: "Parse error", Detail: detail}
}

func invalidRequest(id json.RawMessage, detail string) *Error {
	return &Error{HTTPStatus: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "Invalid Request", Detail: detail, ID: id}
}

func invalidParams(id json.RawMessage, detail string) *Error {
	return &Error{HTTPStatus: http.StatusBadRequest, Code: CodeInvalidParams, Message: "Invalid params", Detail: detail, ID: id}
}

func headerMismatch(id json.RawMessage, detail string) *Error {
	return &Error{HTTPStatus: http.StatusBadRequest, Code: CodeHeaderMismatch, Message: "Header mismatch: " + detail, Detail: detail, ID: id}
}
