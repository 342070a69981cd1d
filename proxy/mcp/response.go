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
	return appendError(b, id, code, message, data)
}

// BatchErrorResponse answers a batch: a JSON array holding one error object, as ErrorResponse
// writes it, for each request (KindRequest) of msgs, in order. Notifications and the client's
// responses get no answer. It returns nil when msgs has no request, since JSON-RPC never
// answers with an empty array: the proxy then answers without a body.
func BatchErrorResponse(msgs []Message, code int, message string, data any) []byte {
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
		b = appendError(b, m.ID, code, message, data)
	}
	if b == nil {
		return nil
	}
	return append(b, ']')
}

func appendError(b []byte, id json.RawMessage, code int, message string, data any) []byte {
	b = append(b, `{"jsonrpc":"2.0",`...)
	if id != nil && json.Valid(id) {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
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
