package mcp

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func b64(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }

func TestCheckHeaders(t *testing.T) {
	call := single(request("1", ratelimit.MethodToolsCall, "tööl"))
	read := single(request(`"r"`, ratelimit.MethodResourcesRead, "file:///a b"))
	mismatch := func(id string) *Error {
		e := &Error{HTTPStatus: 400, Code: CodeHeaderMismatch}
		if id != "" {
			e.ID = raw(id)
		}
		return e
	}
	cases := map[string]struct {
		reason string
		h      http.Header
		body   Body
		want   *Error // compared without Message and Detail
	}{
		"NoHeaders": {
			reason: "Clients of older revisions send no headers: fine.",
			h:      http.Header{},
			body:   call,
		},
		"Match": {
			reason: "Headers equal to the body are fine.",
			h:      http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"tööl"}},
			body:   call,
		},
		"MethodOnly": {
			reason: "Mcp-Method alone is checked and fine when it matches.",
			h:      http.Header{"Mcp-Method": {"ping"}},
			body:   single(Message{Kind: KindRequest, ID: raw("3"), Method: "ping"}),
		},
		"NameOnly": {
			reason: "Mcp-Name alone is checked and fine when it matches.",
			h:      http.Header{"Mcp-Name": {"file:///a b"}},
			body:   read,
		},
		"MethodMismatch": {
			reason: "An Mcp-Method that is not the body's method is refused, echoing the id.",
			h:      http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"tööl"}},
			body:   call,
			want:   mismatch("1"),
		},
		"MethodCase": {
			reason: "Methods compare case-sensitively.",
			h:      http.Header{"Mcp-Method": {"Tools/Call"}},
			body:   call,
			want:   mismatch("1"),
		},
		"NameMismatch": {
			reason: "An Mcp-Name that is not params.name is refused.",
			h:      http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"other"}},
			body:   call,
			want:   mismatch("1"),
		},
		"URIMismatch": {
			reason: "An Mcp-Name that is not params.uri is refused.",
			h:      http.Header{"Mcp-Name": {"file:///a"}},
			body:   read,
			want:   mismatch(`"r"`),
		},
		"Base64": {
			reason: "Values in the =?base64?...?= form are compared decoded.",
			h:      http.Header{"Mcp-Method": {b64("tools/call")}, "Mcp-Name": {b64("tööl")}},
			body:   call,
		},
		"Base64Mismatch": {
			reason: "A decoded value must match too.",
			h:      http.Header{"Mcp-Name": {b64("tool")}},
			body:   call,
			want:   mismatch("1"),
		},
		"BadBase64": {
			reason: "Invalid base64 in the encoded form is a mismatch.",
			h:      http.Header{"Mcp-Name": {"=?base64?dPZ*?="}},
			body:   call,
			want:   mismatch("1"),
		},
		"Base64MarkersCaseSensitive": {
			reason: "=?BASE64?...?= is not the encoded form: it is compared literally.",
			h:      http.Header{"Mcp-Name": {"=?BASE64?" + base64.StdEncoding.EncodeToString([]byte("tööl")) + "?="}},
			body:   call,
			want:   mismatch("1"),
		},
		"LiteralLooksEncoded": {
			reason: "A value with only the prefix is literal.",
			h:      http.Header{"Mcp-Name": {"=?base64?x"}},
			body:   single(request("1", ratelimit.MethodToolsCall, "=?base64?x")),
		},
		"DuplicateMethod": {
			reason: "Mcp-Method sent twice is refused, even if both match.",
			h:      http.Header{"Mcp-Method": {"tools/call", "tools/call"}},
			body:   call,
			want:   mismatch("1"),
		},
		"DuplicateName": {
			reason: "Mcp-Name sent twice is refused.",
			h:      http.Header{"Mcp-Name": {"tööl", "x"}},
			body:   call,
			want:   mismatch("1"),
		},
		"NonCanonicalKey": {
			reason: "A hand-built header map with a lower-case key is read too.",
			h:      http.Header{"Mcp-Name": {"tööl"}, "mcp-name": {"x"}},
			body:   call,
			want:   mismatch("1"),
		},
		"Batch": {
			reason: "The headers describe one message: on a batch they are refused, with no id.",
			h:      http.Header{"Mcp-Method": {"tools/call"}},
			body:   Body{Batch: true, Messages: []Message{request("1", ratelimit.MethodToolsCall, "tööl")}},
			want:   mismatch(""),
		},
		"Notification": {
			reason: "A notification's Mcp-Method is checked; there is no id to echo.",
			h:      http.Header{"Mcp-Method": {"notifications/cancelled"}},
			body:   single(notification("notifications/initialized", "")),
			want:   mismatch(""),
		},
		"Response": {
			reason: "A response has no method, so Mcp-Method on it is a mismatch; its id is not echoed.",
			h:      http.Header{"Mcp-Method": {""}},
			body:   single(response("5")),
			want:   mismatch(""),
		},
		"NameOnUnlimited": {
			reason: "Mcp-Name on a method that is not limited (resources/subscribe) is not checked.",
			h:      http.Header{"Mcp-Method": {"resources/subscribe"}, "Mcp-Name": {"file:///a"}},
			body:   single(Message{Kind: KindRequest, ID: raw("1"), Method: "resources/subscribe"}),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := CheckHeaders(tc.h, tc.body)
			if got != nil {
				if got.Detail == "" || got.Message != "Header mismatch: "+got.Detail {
					t.Errorf("%s\nCheckHeaders(...): Message %q, Detail %q", tc.reason, got.Message, got.Detail)
				}
				e := *got
				e.Message, e.Detail = "", ""
				got = &e
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nCheckHeaders(...): -want, +got:\n%s", tc.reason, diff)
			}
		})
	}
}
