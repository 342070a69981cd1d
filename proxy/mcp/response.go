package mcp

import (
	"encoding/json"
	"strconv"
)

// ErrorResponse returns one JSON-RPC error object:
//
//	{"jsonrpc":"2.0","id":<id>,"error":{"code":<code>,"message":<message>,"data":<data>}}
//
// id is written byte for byte as given; when it is nil (or not valid JSON) the "id" member is
// omitted, not null. data is omitted when nil or when it cannot be marshalled.
func ErrorResponse(id json.RawMessage, code int, message string, data any) []byte {
	b := make([]byte, 0, 64+len(id)+len(message))
	return AppendError(b, id, code, message, data)
}

// BatchErrorResponse answers a batch: a JSON array holding one error object, as ErrorResponse
// writes it, for each request (KindRequest) of msgs, in order. Notifications and the client's
// responses get no answer. It returns nil when msgs has no request, since JSON-RPC never
// answers with an empty array: the proxy then answers without a body.
func BatchErrorResponse(msgs []Message, code int, message string, data any) []byte {
	return BatchResponse(msgs, func(b []byte, m Message) []byte {
		return AppendError(b, m.ID, code, message, data)
	})
}

// BatchResponse answers a batch: a JSON array holding, for each request (KindRequest with an
// id) of msgs, in order, what answer appends for it; notifications and the client's responses
// get no answer. It returns nil when msgs has no request (JSON-RPC never answers with an
// empty array).
func BatchResponse(msgs []Message, answer func(b []byte, m Message) []byte) []byte {
	var b []byte
	for _, m := range msgs {
		if m.Kind != KindRequest || m.ID == nil {
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, 128), '[')
		} else {
			b = append(b, ',')
		}
		b = answer(b, m)
	}
	if b == nil {
		return nil
	}
	return append(b, ']')
}

// AppendError appends the error object ErrorResponse returns.
func AppendError(b []byte, id json.RawMessage, code int, message string, data any) []byte {
	b = appendHead(b, id)
	b = append(b, `"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	msg, _ := json.Marshal(message) // a string always marshals
	b = append(b, msg...)
	if data != nil {
		if d, err := json.Marshal(data); err == nil {
			b = append(b, `,"data":`...)
			b = append(b, d...)
		}
	}
	return append(b, "}}"...)
}

// ToolErrorResult returns one JSON-RPC response whose result is an MCP CallToolResult with
// isError true and one text content:
//
//	{"jsonrpc":"2.0","id":<id>,"result":{"content":[{"type":"text","text":<text>}],"isError":true,"_meta":<meta>}}
//
// A tool's failure reported this way reaches the model that called the tool, as its result,
// where a JSON-RPC error stops in the client program. The id is written as ErrorResponse
// writes it; a result without one answers nobody, so callers answer requests only. meta is
// omitted when nil or when it cannot be marshalled.
func ToolErrorResult(id json.RawMessage, text string, meta any) []byte {
	return AppendToolErrorResult(make([]byte, 0, 128+len(id)+len(text)), id, text, meta)
}

// AppendToolErrorResult appends the response ToolErrorResult returns.
func AppendToolErrorResult(b []byte, id json.RawMessage, text string, meta any) []byte {
	b = appendHead(b, id)
	b = append(b, `"result":{"content":[{"type":"text","text":`...)
	t, _ := json.Marshal(text) // a string always marshals
	b = append(b, t...)
	b = append(b, `}],"isError":true`...)
	if meta != nil {
		if m, err := json.Marshal(meta); err == nil {
			b = append(b, `,"_meta":`...)
			b = append(b, m...)
		}
	}
	return append(b, "}}"...)
}

// appendHead opens a response object: the version and the id, when id is valid JSON.
func appendHead(b []byte, id json.RawMessage) []byte {
	b = append(b, `{"jsonrpc":"2.0",`...)
	if id != nil && json.Valid(id) {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
	return b
}
