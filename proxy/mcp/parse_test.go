package mcp

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func request(id, method, name string) Message {
	return Message{Kind: KindRequest, ID: raw(id), Method: method, Name: name, Limited: name != ""}
}

func notification(method, name string) Message {
	return Message{Kind: KindNotification, Method: method, Name: name, Limited: name != ""}
}

func response(id string) Message { return Message{Kind: KindResponse, ID: raw(id)} }

func single(m Message) Body { return Body{Messages: []Message{m}} }

func errParse() *Error { return &Error{HTTPStatus: 400, Code: CodeParseError, Message: "Parse error"} }

func errInvalid(id string) *Error {
	e := &Error{HTTPStatus: 400, Code: CodeInvalidRequest, Message: "Invalid Request"}
	if id != "" {
		e.ID = raw(id)
	}
	return e
}

func errParams(id string) *Error {
	e := &Error{HTTPStatus: 400, Code: CodeInvalidParams, Message: "Invalid params"}
	if id != "" {
		e.ID = raw(id)
	}
	return e
}

// nest returns n nested arrays around 0.
func nest(n int) string { return strings.Repeat("[", n) + "0" + strings.Repeat("]", n) }

// batchOf returns a batch of n copies of the message msg.
func batchOf(n int, msg string) string { return "[" + strings.Repeat(msg+",", n-1) + msg + "]" }

type parseCase struct {
	reason string
	body   string
	want   Body
	err    *Error // compared without Detail
}

// parseCases is the table of TestParse, and FuzzParse's seed corpus.
func parseCases() map[string]parseCase {
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`
	return map[string]parseCase{
		"ToolsCall": {
			reason: "A tools/call request is limited, keyed by params.name.",
			body:   call,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"PromptsGet": {
			reason: "A prompts/get request is limited, keyed by params.name.",
			body:   `{"jsonrpc":"2.0","id":"p","method":"prompts/get","params":{"name":"review","arguments":{}}}`,
			want:   single(request(`"p"`, ratelimit.MethodPromptsGet, "review")),
		},
		"ResourcesRead": {
			reason: "A resources/read request is limited, keyed by params.uri.",
			body:   `{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"file:///a.txt"}}`,
			want:   single(request("7", ratelimit.MethodResourcesRead, "file:///a.txt")),
		},
		"ResourcesReadIgnoresName": {
			reason: "resources/read is keyed by uri even when params also has a name.",
			body:   `{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"name":"n","uri":"u"}}`,
			want:   single(request("7", ratelimit.MethodResourcesRead, "u")),
		},
		"LimitedNotification": {
			reason: "A limited method sent as a notification (no id) is still limited.",
			body:   `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"search"}}`,
			want:   single(notification(ratelimit.MethodToolsCall, "search")),
		},
		"EscapedSlashMethod": {
			reason: `"tools\/call" decodes to tools/call, as upstream decodes it.`,
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"search"}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"UnicodeEscapedMethod": {
			reason: `"\u0074ools/call" decodes to tools/call.`,
			body:   `{"jsonrpc":"2.0","id":1,"method":"\u0074ools/call","params":{"name":"search"}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"EscapedKeys": {
			reason: "Escaped keys are decoded: me\\u0074hod is method, n\\u0061me is name.",
			body:   `{"jsonrpc":"2.0","id":1,"me\u0074hod":"tools/call","p\u0061rams":{"n\u0061me":"se\u0061rch"}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"SurrogatePairName": {
			reason: "A valid surrogate pair escape decodes to its rune.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud83d\ude00"}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "\U0001F600")),
		},
		"LoneSurrogateName": {
			reason: "A lone surrogate escape decodes to U+FFFD, as encoding/json decodes it.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\ud800b\udc00\ud800\u0041"}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "a\uFFFDb\uFFFD\uFFFDA")),
		},
		"ParamsBeforeMethod": {
			reason: "Key order does not matter: params may come before method.",
			body:   `{"params":{"arguments":{},"name":"search"},"method":"tools/call","id":1,"jsonrpc":"2.0"}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"Whitespace": {
			reason: "JSON whitespace anywhere is fine.",
			body:   " \r\n\t{ \"jsonrpc\" : \"2.0\" ,\n\"id\" : 1 , \"method\" : \"tools/call\" , \"params\" : { \"name\" : \"search\" } }\n",
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"UnknownKeysIgnored": {
			reason: "Keys that mean nothing to classification are ignored.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","_meta":{"progressToken":1}},"extra":[1,2]}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "search")),
		},
		"MethodCaseSensitive": {
			reason: "Tools/Call is not tools/call: not limited, and no upstream runs it as tools/call.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"search"}}`,
			want:   single(Message{Kind: KindRequest, ID: raw("1"), Method: "Tools/Call"}),
		},
		"Initialize": {
			reason: "initialize is never limited.",
			body:   `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			want:   single(Message{Kind: KindRequest, ID: raw("0"), Method: "initialize"}),
		},
		"ServerDiscover": {
			reason: "server/discover is never limited.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"server/discover"}`,
			want:   single(Message{Kind: KindRequest, ID: raw("1"), Method: "server/discover"}),
		},
		"InitializedNotification": {
			reason: "notifications/* are never limited.",
			body:   `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want:   single(notification("notifications/initialized", "")),
		},
		"Ping": {
			reason: "ping is never limited.",
			body:   `{"jsonrpc":"2.0","id":"x","method":"ping"}`,
			want:   single(Message{Kind: KindRequest, ID: raw(`"x"`), Method: "ping"}),
		},
		"UnlimitedParamsNotRead": {
			reason: "The params of a method that is not limited are not inspected.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1,{"a":1,"a":2}]}`,
			want:   single(Message{Kind: KindRequest, ID: raw("1"), Method: "tools/list"}),
		},
		"ClientResult": {
			reason: "A client's response to a server request is a response, never limited.",
			body:   `{"jsonrpc":"2.0","id":"srv-1","result":{"method":"tools/call","params":{"name":"x"}}}`,
			want:   single(response(`"srv-1"`)),
		},
		"ClientErrorNullID": {
			reason: "A client's error response may have id null.",
			body:   `{"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"nope"}}`,
			want:   single(response("null")),
		},
		"BatchMixed": {
			reason: "A batch mixing requests, notifications and responses classifies each.",
			body: `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},` +
				`{"jsonrpc":"2.0","method":"resources/read","params":{"uri":"u"}},` +
				`{"jsonrpc":"2.0","method":"notifications/progress","params":{}},` +
				`{"jsonrpc":"2.0","id":"s1","result":{}},` +
				`{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
			want: Body{Batch: true, Messages: []Message{
				request("1", ratelimit.MethodToolsCall, "a"),
				notification(ratelimit.MethodResourcesRead, "u"),
				notification("notifications/progress", ""),
				response(`"s1"`),
				{Kind: KindRequest, ID: raw("2"), Method: "ping"},
			}},
		},
		"BatchOfOne": {
			reason: "A batch of one message is still a batch.",
			body:   `[` + call + `]`,
			want:   Body{Batch: true, Messages: []Message{request("1", ratelimit.MethodToolsCall, "search")}},
		},
		"BigID": {
			reason: "A number id too big for any integer type is kept byte for byte.",
			body:   `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"a"}}`,
			want:   single(request("123456789012345678901234567890", ratelimit.MethodToolsCall, "a")),
		},
		"FloatID": {
			reason: "The id 1.0 is kept as 1.0, not 1.",
			body:   `{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"a"}}`,
			want:   single(request("1.0", ratelimit.MethodToolsCall, "a")),
		},
		"NegativeExponentID": {
			reason: "The ids -5 and 1e3 are kept as sent.",
			body:   `[{"jsonrpc":"2.0","id":-5,"method":"ping"},{"jsonrpc":"2.0","id":1E+3,"method":"ping"}]`,
			want: Body{Batch: true, Messages: []Message{
				{Kind: KindRequest, ID: raw("-5"), Method: "ping"},
				{Kind: KindRequest, ID: raw("1E+3"), Method: "ping"},
			}},
		},
		"EscapedStringID": {
			reason: "A string id is kept with its quotes and escapes, as sent.",
			body:   `{"jsonrpc":"2.0","id":"a\"b\u0063","method":"tools/call","params":{"name":"a"}}`,
			want:   single(request(`"a\"b\u0063"`, ratelimit.MethodToolsCall, "a")),
		},
		"MaxDepthExactly": {
			reason: "Nesting exactly MaxDepth deep is allowed.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":` + nest(MaxDepth-2) + `}}`,
			want:   single(request("1", ratelimit.MethodToolsCall, "a")),
		},

		// Syntax.
		"Empty": {
			reason: "An empty body is a parse error.",
			body:   ``,
			err:    errParse(),
		},
		"Truncated": {
			reason: "Malformed JSON is a parse error.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}`,
			err:    errParse(),
		},
		"TrailingGarbage": {
			reason: "Data after the value is a parse error, as encoding/json says.",
			body:   call + ` x`,
			err:    errParse(),
		},
		"TwoValues": {
			reason: "Two concatenated messages are a parse error.",
			body:   call + call,
			err:    errParse(),
		},
		"LeadingZero": {
			reason: "A number with a leading zero is not JSON.",
			body:   `{"jsonrpc":"2.0","id":01,"method":"ping"}`,
			err:    errParse(),
		},
		"BadEscape": {
			reason: `\x is not a JSON escape.`,
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools\x2fcall","params":{"name":"a"}}`,
			err:    errParse(),
		},
		"ControlCharacter": {
			reason: "A raw control character in a string is not JSON.",
			body:   "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\tb\"}}",
			err:    errParse(),
		},
		"ByteOrderMark": {
			reason: "A byte order mark is not JSON whitespace.",
			body:   "\uFEFF" + call,
			err:    errParse(),
		},
		"InvalidUTF8Name": {
			reason: "Invalid UTF-8 is refused: encoding/json would read it as U+FFFD.",
			body:   "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\xffb\"}}",
			err:    errParse(),
		},
		"InvalidUTF8Anywhere": {
			reason: "Invalid UTF-8 is refused anywhere in the body, even in arguments.",
			body:   "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"x\":\"\xc0\xaf\"}}",
			err:    errParse(),
		},
		"SyntaxBeatsInvalidMessage": {
			reason: "A syntax error anywhere is reported rather than an invalid message before it.",
			body:   `[1,{"jsonrpc":"2.0"`,
			err:    errParse(),
		},

		// Keys.
		"DuplicateMethod": {
			reason: "encoding/json keeps the last of duplicate keys: refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("1"),
		},
		"DuplicateEscapedMethod": {
			reason: "Keys are compared decoded: me\\u0074hod duplicates method.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"ping","me\u0074hod":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("1"),
		},
		"MethodLookAlike": {
			reason: "encoding/json reads Method as method; a strict server would not: refused.",
			body:   `{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("1"),
		},
		"ParamsLookAlike": {
			reason: "PARAMS beside params is refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"PARAMS":{"name":"b"}}`,
			err:    errInvalid("1"),
		},
		"LongSParams": {
			reason: "paramſ (U+017F) folds to params in encoding/json: refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"paramſ":{"name":"b"}}`,
			err:    errInvalid("1"),
		},
		"UnderscoreMethod": {
			reason: "_method is read as method by decoders that ignore '_' and '-': refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"ping","_method":"tools/call"}`,
			err:    errInvalid("1"),
		},
		"IDLookAlike": {
			reason: "ID beside id is refused, and neither is echoed.",
			body:   `{"jsonrpc":"2.0","id":1,"ID":2,"method":"ping"}`,
			err:    errInvalid(""),
		},
		"JSONRPCLookAlike": {
			reason: "JsonRpc is refused.",
			body:   `{"JsonRpc":"2.0","id":1,"method":"ping"}`,
			err:    errInvalid("1"),
		},
		"DuplicateOtherKey": {
			reason: "Duplicate keys are refused in the message object even when they mean nothing.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"ping","x":1,"X":2}`,
			err:    errInvalid("1"),
		},
		"DuplicateName": {
			reason: "Duplicate params.name is refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`,
			err:    errInvalid("1"),
		},
		"NameLookAlike": {
			reason: "Name beside name is refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"a","Name":"b"}}`,
			err:    errInvalid("1"),
		},
		"URILookAlike": {
			reason: "Uri beside uri is refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","Uri":"b"}}`,
			err:    errInvalid("1"),
		},
		"DuplicateArguments": {
			reason: "Duplicate keys are refused in the params of a limited call.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{},"ARGUMENTS":{}}}`,
			err:    errInvalid("1"),
		},

		// Message rules.
		"JSONRPCWrong": {
			reason: `jsonrpc must be exactly "2.0".`,
			body:   `{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("1"),
		},
		"JSONRPCMissing": {
			reason: "jsonrpc is required.",
			body:   `{"id":1,"method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("1"),
		},
		"JSONRPCNumber": {
			reason: "jsonrpc must be a string.",
			body:   `{"jsonrpc":2.0,"id":1,"method":"ping"}`,
			err:    errInvalid("1"),
		},
		"MethodNotString": {
			reason: "method must be a string.",
			body:   `{"jsonrpc":"2.0","id":1,"method":["tools/call"]}`,
			err:    errInvalid("1"),
		},
		"MethodEmpty": {
			reason: "method must not be empty.",
			body:   `{"jsonrpc":"2.0","id":1,"method":""}`,
			err:    errInvalid("1"),
		},
		"IDObject": {
			reason: "An object id is refused and not echoed.",
			body:   `{"jsonrpc":"2.0","id":{"a":1},"method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid(""),
		},
		"IDBool": {
			reason: "A boolean id is refused and not echoed.",
			body:   `{"jsonrpc":"2.0","id":true,"method":"ping"}`,
			err:    errInvalid(""),
		},
		"IDNullRequest": {
			reason: "MCP forbids a null request id: refused, echoing null.",
			body:   `{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"a"}}`,
			err:    errInvalid("null"),
		},
		"MethodAndResult": {
			reason: "A message cannot be both a request and a response.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"result":{}}`,
			err:    errInvalid("1"),
		},
		"ResponseWithoutID": {
			reason: "A response needs an id.",
			body:   `{"jsonrpc":"2.0","result":{}}`,
			err:    errInvalid(""),
		},
		"ResultAndError": {
			reason: "A response has a result or an error, not both.",
			body:   `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`,
			err:    errInvalid("1"),
		},
		"NothingToDo": {
			reason: "A message without method, result or error is not a message.",
			body:   `{"jsonrpc":"2.0","id":1}`,
			err:    errInvalid("1"),
		},
		"TopLevelString": {
			reason: "A JSON value that is neither object nor array is an invalid request.",
			body:   `"tools/call"`,
			err:    errInvalid(""),
		},
		"TopLevelNull": {
			reason: "null is an invalid request.",
			body:   `null`,
			err:    errInvalid(""),
		},

		// Params of limited methods.
		"ParamsMissing": {
			reason: "tools/call without params is invalid params, echoing the id.",
			body:   `{"jsonrpc":"2.0","id":"q","method":"tools/call"}`,
			err:    errParams(`"q"`),
		},
		"ParamsNull": {
			reason: "params null is invalid params.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`,
			err:    errParams("1"),
		},
		"ParamsArray": {
			reason: "params must be an object for a limited method.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}`,
			err:    errParams("1"),
		},
		"NameMissing": {
			reason: "tools/call without params.name is invalid params.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}`,
			err:    errParams("1"),
		},
		"NameNumber": {
			reason: "params.name must be a string.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":1}}`,
			err:    errParams("1"),
		},
		"NameNull": {
			reason: "params.name null is invalid params (encoding/json would read \"\").",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}`,
			err:    errParams("1"),
		},
		"NameEmpty": {
			reason: "params.name must not be empty.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}`,
			err:    errParams("1"),
		},
		"URIMissing": {
			reason: "resources/read needs params.uri; a name does not do.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"a"}}`,
			err:    errParams("1"),
		},
		"NotificationNameMissing": {
			reason: "A limited notification without a name is invalid params, with no id to echo.",
			body:   `{"jsonrpc":"2.0","method":"tools/call","params":{}}`,
			err:    errParams(""),
		},

		// Batches and limits.
		"EmptyBatch": {
			reason: "An empty batch is invalid.",
			body:   `[]`,
			err:    errInvalid(""),
		},
		"BatchElementNotObject": {
			reason: "Every batch element must be an object.",
			body:   `[` + call + `,1]`,
			err:    errInvalid(""),
		},
		"BatchInvalidElement": {
			reason: "An invalid element refuses the whole batch, echoing no id.",
			body:   `[` + call + `,{"jsonrpc":"2.0","id":9,"method":"tools/call"}]`,
			err:    errParams(""),
		},
		"NestedBatch": {
			reason: "A batch inside a batch is not a message.",
			body:   `[[` + call + `]]`,
			err:    errInvalid(""),
		},
		"BatchTooLarge": {
			reason: "A batch of more than MaxBatch messages is refused.",
			body:   batchOf(MaxBatch+1, call),
			err:    errInvalid(""),
		},
		"BatchAtLimit": {
			reason: "A batch of exactly MaxBatch messages is fine.",
			body:   batchOf(MaxBatch, call),
			want:   Body{Batch: true, Messages: slices.Repeat([]Message{request("1", ratelimit.MethodToolsCall, "search")}, MaxBatch)},
		},
		"TooDeep": {
			reason: "Nesting deeper than MaxDepth (64) is refused.",
			body:   `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":` + nest(MaxDepth-1) + `}}`,
			err:    errInvalid(""),
		},
		"TooDeepBatch": {
			reason: "A batch counts as one level: the message of MaxDepthExactly is too deep in one.",
			body:   `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":` + nest(MaxDepth-2) + `}}]`,
			err:    errInvalid(""),
		},
	}
}

func TestParse(t *testing.T) {
	for name, tc := range parseCases() {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(tc.body))
			if err != nil {
				if err.Detail == "" {
					t.Errorf("%s\nParse(...): error %+v has no Detail", tc.reason, err)
				}
				e := *err
				e.Detail = ""
				err = &e
			}
			if diff := cmp.Diff(tc.err, err); diff != "" {
				t.Errorf("%s\nParse(...): -want error, +got error:\n%s", tc.reason, diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nParse(...): -want, +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestErrorString checks the text of Error(), which the proxy logs: which error it is, the
// tests above tell by code, not by text.
func TestErrorString(t *testing.T) {
	_, err := Parse([]byte(`{"jsonrpc":"2.0","id":1,"Method":"x"}`))
	want := `mcp: Invalid Request: key "Method" may be read as "method" (JSON-RPC -32600, HTTP 400)`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("Error(): -want, +got:\n%s", diff)
	}
}
