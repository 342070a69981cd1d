package admission

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/internal/envtest"
)

// The tests in this file hold the Validator to its contract, "the verdict of a real
// kube-apiserver": each manifest is created on a real one (envtest, with the CRD from
// manifests/crd installed) with strict field validation, as kubectl sends it, and the
// server's answer must be the one the Validator's errors describe: the same verdict, the
// same HTTP status and reason, the same message and the same causes, and for an admitted
// object the same stored spec (defaults included).

func TestMain(m *testing.M) { os.Exit(envtest.Main(m)) }

// answer is an API server's answer to a create, reduced to what the comparison needs.
type answer struct {
	Code    int32
	Reason  metav1.StatusReason
	Message string
	Causes  []metav1.StatusCause
	// NoKindMatch is set when the client found no resource for the apiVersion and kind and
	// sent nothing, as kubectl does ("no matches for kind").
	NoKindMatch bool
}

// expectedAnswer is the answer the server gives, by the Validator's documented error forms
// (see Admit), to a create of an object of kind gvk named name that the Validator answered
// with errs.
func expectedAnswer(gvk schema.GroupVersionKind, name string, errs field.ErrorList) answer {
	if len(errs) == 0 {
		return answer{Code: 201}
	}
	// The request body could not be decoded: 400, the decoder's words after the
	// handler's framing, no causes.
	cannotBeHandled := fmt.Sprintf("%s in version %q cannot be handled as a %s: ", gvk.Kind, gvk.Version, gvk.Kind)
	// Another kind or apiVersion: no resource of the cluster serves it.
	if allErrs(errs, func(e *field.Error) bool { return e.Field == "kind" || e.Field == "apiVersion" }) {
		return answer{NoKindMatch: true}
	}
	// Unknown fields: the strict decoder refuses the body.
	if allErrs(errs, func(e *field.Error) bool { return e.Origin == OriginUnknownField }) {
		var details []string
		for _, e := range errs {
			details = append(details, e.Detail)
		}
		return answer{Code: 400, Reason: metav1.StatusReasonBadRequest, Message: cannotBeHandled + "strict decoding error: " + strings.Join(details, ", ")}
	}
	// Metadata that is not an ObjectMeta, or a body that is not an object (a rule at the
	// root, such as the one on metadata.name, is reported at "<nil>" too: a 422).
	if len(errs) == 1 && (errs[0].Field == "metadata" || errs[0].Origin == OriginDecode) {
		return answer{Code: 400, Reason: metav1.StatusReasonBadRequest, Message: cannotBeHandled + errs[0].Detail}
	}
	// A resourceVersion on create: storage refuses it after validation with a plain error,
	// which the server answers as an unknown 500: no reason, no causes.
	if len(errs) == 1 && errs[0].Field == "metadata.resourceVersion" {
		return answer{Code: 500, Message: errs[0].Detail}
	}
	// Everything else: 422 with one cause per error.
	status := apierrors.NewInvalid(gvk.GroupKind(), name, errs).Status()
	return answer{Code: status.Code, Reason: status.Reason, Message: status.Message, Causes: status.Details.Causes}
}

func allErrs(errs field.ErrorList, f func(*field.Error) bool) bool {
	for _, e := range errs {
		if !f(e) {
			return false
		}
	}
	return true
}

// serverAnswer reduces the client's result of a create to an answer.
func serverAnswer(err error) answer {
	if err == nil {
		return answer{Code: 201}
	}
	if meta.IsNoMatchError(err) {
		return answer{NoKindMatch: true}
	}
	var statusErr apierrors.APIStatus
	if !errors.As(err, &statusErr) {
		return answer{Message: "not an API status error: " + err.Error()}
	}
	s := statusErr.Status()
	a := answer{Code: s.Code, Reason: s.Reason, Message: s.Message}
	if s.Details != nil {
		a.Causes = s.Details.Causes
	}
	return a
}

// decodeManifest turns a manifest into the object the client sends: JSON types, integers
// as int64, as kubectl's YAML-to-JSON conversion and the unstructured decoder produce.
func decodeManifest(t *testing.T, manifest string) map[string]interface{} {
	t.Helper()
	data, err := oneJSONDocument([]byte(manifest))
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(data, &obj); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	return obj
}

// createOnServer creates obj, in its metadata.namespace, through c; it returns the server's
// answer and, when admitted, the object as stored.
func createOnServer(t *testing.T, c client.Client, obj map[string]interface{}) (answer, map[string]interface{}) {
	t.Helper()
	u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(obj)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.Create(ctx, u)
	return serverAnswer(err), u.Object
}

// TestAPIServerAgreesWithValidator runs TestValidate's table against a real API server.
func TestAPIServerAgreesWithValidator(t *testing.T) {
	v := newValidator(t)
	env := envtest.Shared(t)
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		tc := cases[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			checkAgainstServer(t, v, env, tc.reason, decodeManifest(t, tc.manifest))
		})
	}
}

// TestAPIServerAgreesOnProbes runs objects that TestValidate's table does not hold against a
// real API server: odd shapes, bounds, and unknown fields in places the table does not
// reach. Only the agreement is asserted; TestValidate and TestValidateOddInputs pin the
// messages of some of them.
func TestAPIServerAgreesOnProbes(t *testing.T) {
	v := newValidator(t)
	env := envtest.Shared(t)

	// base is a valid object; each probe changes it.
	base := func() map[string]interface{} {
		return decodeManifest(t, `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: probe
spec:
  upstream:
    url: http://search:8080/mcp
  externalAuthConfigRef: {name: gateway}
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared: {maxTokens: 100, refillPeriod: 1m}
    tools:
    - name: search
      perUser: {maxTokens: 10, refillPeriod: 1m}
  proxy:
    replicas: 2
`)
	}
	set := func(value interface{}, path ...string) func(map[string]interface{}) {
		return func(obj map[string]interface{}) {
			if err := unstructured.SetNestedField(obj, runtime.DeepCopyJSONValue(value), path...); err != nil {
				panic(err)
			}
		}
	}
	tools := func(n int, entry func(i int) map[string]interface{}) []interface{} {
		var out []interface{}
		for i := range n {
			out = append(out, entry(i))
		}
		return out
	}
	bucket := map[string]interface{}{"maxTokens": int64(1), "refillPeriod": "1m"}

	probes := map[string]struct {
		reason string
		change func(map[string]interface{})
	}{
		"Base":               {"The probes' base object is valid.", func(map[string]interface{}) {}},
		"SpecNull":           {"spec: null is dropped while decoding; spec is required.", set(nil, "spec")},
		"SpecWrongType":      {"A spec that is not an object.", set([]interface{}{"x"}, "spec")},
		"MetadataNameNumber": {"A metadata.name that is not a string makes the body undecodable.", set(int64(5), "metadata", "name")},
		"GenerateName": {"A name generated from generateName.", func(o map[string]interface{}) {
			unstructured.RemoveNestedField(o, "metadata", "name")
			_ = unstructured.SetNestedField(o, "probe-", "metadata", "generateName")
		}},
		"NoName":              {"Neither name nor generateName.", func(o map[string]interface{}) { unstructured.RemoveNestedField(o, "metadata", "name") }},
		"NameTooLong":         {"A name longer than 253 characters.", set(strings.Repeat("a", 254), "metadata", "name")},
		"BadLabel":            {"A label key that is not a qualified name.", set(map[string]interface{}{"bad key!": "x"}, "metadata", "labels")},
		"MaxTokensAboveInt32": {"maxTokens beyond int32 (the schema's format and maximum).", set(int64(3000000000), "spec", "rateLimiting", "shared", "maxTokens")},
		"MaxTokensFloat":      {"A fractional maxTokens is not an integer.", set(1.5, "spec", "rateLimiting", "shared", "maxTokens")},
		"MaxTokensWholeFloat": {"2.0 in JSON decodes as an integer.", set(2.0, "spec", "rateLimiting", "shared", "maxTokens")},
		"RefillPeriodEmpty":   {"An empty refillPeriod fails the pattern.", set("", "spec", "rateLimiting", "shared", "refillPeriod")},
		"CostZero": {"A cost of 0.", set([]interface{}{
			map[string]interface{}{"name": "search", "cost": int64(0), "shared": bucket},
		}, "spec", "rateLimiting", "tools")},
		"ToolNameMissing": {"A list-map entry without its key (required).", set([]interface{}{
			map[string]interface{}{"shared": bucket},
		}, "spec", "rateLimiting", "tools")},
		"ToolNameTooLong": {"A tool name beyond its maxLength blocks CEL.", set([]interface{}{
			map[string]interface{}{"name": strings.Repeat("t", 129), "shared": bucket},
		}, "spec", "rateLimiting", "tools")},
		"TooManyTools": {"257 tools, one more than maxItems, blocks CEL.", set(tools(257, func(i int) map[string]interface{} {
			return map[string]interface{}{"name": fmt.Sprintf("t%d", i), "shared": bucket}
		}), "spec", "rateLimiting", "tools")},
		"ToolsEmptyList": {"tools: [] with a shared bucket.", set([]interface{}{}, "spec", "rateLimiting", "tools")},
		"ToolsNull":      {"tools: null is dropped while decoding.", set(nil, "spec", "rateLimiting", "tools")},
		"ToolUnknownField": {"An unknown field inside a list entry.", set([]interface{}{
			map[string]interface{}{"name": "search", "shared": bucket, "burst": int64(3)},
		}, "spec", "rateLimiting", "tools")},
		"DuplicateResourceURIs": {"resources is a list map keyed by uri.", set([]interface{}{
			map[string]interface{}{"uri": "file:///a", "shared": bucket},
			map[string]interface{}{"uri": "file:///a", "perUser": bucket},
		}, "spec", "rateLimiting", "resources")},
		"UnknownTopLevelField":    {"An unknown field beside spec.", set("x", "extra")},
		"UnknownStatusField":      {"status is dropped on create, but strict decoding runs first.", set(map[string]interface{}{"foo": "x"}, "status")},
		"StatusWrongType":         {"status of the wrong type is dropped on create.", set("x", "status")},
		"UpstreamURLEmpty":        {"An empty upstream URL.", set("", "spec", "upstream", "url")},
		"UpstreamURLNotHTTP":      {"An upstream URL that is not http or https.", set("ftp://x/mcp", "spec", "upstream", "url")},
		"ReplicasNegative":        {"proxy.replicas below 0.", set(int64(-1), "spec", "proxy", "replicas")},
		"ResourcesBadQuantity":    {"A resource quantity that does not parse.", set(map[string]interface{}{"requests": map[string]interface{}{"cpu": "lots"}}, "spec", "proxy", "resources")},
		"ResourcesNumberQuantity": {"A quantity written as a number.", set(map[string]interface{}{"limits": map[string]interface{}{"memory": int64(1000000)}}, "spec", "proxy", "resources")},
		"ProviderUnknown":         {"A sessionStorage provider outside the enum.", set("etcd", "spec", "sessionStorage", "provider")},
		"NullBucketField":         {"A null inside a bucket is dropped, then maxTokens is missing.", set(nil, "spec", "rateLimiting", "shared", "maxTokens")},
	}
	for _, name := range slices.Sorted(maps.Keys(probes)) {
		p := probes[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			obj := base()
			p.change(obj)
			checkAgainstServer(t, v, env, p.reason, obj)
		})
	}
}

// checkAgainstServer creates obj, in a fresh namespace, on the real API server with strict
// field validation and checks that the answer is the one the Validator's errors for the very
// same object describe; when both admit it, that the server stored what Admit returns.
func checkAgainstServer(t *testing.T, v *Validator, env *envtest.Env, reason string, obj map[string]interface{}) {
	t.Helper()
	ns := env.Namespace(t)
	// The namespace the server sees, so that the Validator checks the very object.
	if m, ok := obj["metadata"].(map[string]interface{}); ok {
		m["namespace"] = ns
	}
	admitted, errs := v.Admit(obj)
	name, _, _ := unstructured.NestedString(obj, "metadata", "name")

	strict := client.WithFieldValidation(env.Client, metav1.FieldValidationStrict)
	got, stored := createOnServer(t, strict, obj)
	want := expectedAnswer(v.gvk, name, errs)
	t.Logf("server: %d %s %s", got.Code, got.Reason, got.Message)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s\nValidator: %q\nthe API server's answer to the create: -as the Validator predicts +as the server answered:\n%s",
			reason, messages(errs), diff)
	}
	if len(errs) > 0 || got.Code != 201 {
		return
	}
	// Admitted by both: the server stored what Admit returned (defaults, no status).
	if diff := cmp.Diff(admitted["spec"], stored["spec"]); diff != "" {
		t.Errorf("stored spec: -Admit +server:\n%s", diff)
	}
	if diff := cmp.Diff(admitted["status"], stored["status"]); diff != "" {
		t.Errorf("stored status: -Admit +server:\n%s", diff)
	}
	for _, k := range []string{"namespace", "generation", "generateName"} {
		a, _, _ := unstructured.NestedFieldNoCopy(admitted, "metadata", k)
		s, _, _ := unstructured.NestedFieldNoCopy(stored, "metadata", k)
		if !cmp.Equal(a, s) {
			t.Errorf("metadata.%s: Admit %v, server %v", k, a, s)
		}
	}
	// The server generates its own name from generateName; the Validator's has the same form.
	if a, s := admitted["metadata"].(map[string]interface{})["name"], stored["metadata"].(map[string]interface{})["name"]; len(fmt.Sprint(a)) != len(fmt.Sprint(s)) {
		t.Errorf("metadata.name: Admit %v, server %v", a, s)
	}
}

// TestAPIServerAdmitsLargestObject creates, on a real API server, the object of
// TestLargestObjectFitsCELBudget: the most list entries the schema allows, each with both
// buckets, so every rule runs the most times it can. The server's runtime CEL cost budget
// must admit it, as the Validator does.
func TestAPIServerAdmitsLargestObject(t *testing.T) {
	v := newValidator(t)
	env := envtest.Shared(t)

	checkAgainstServer(t, v, env, "the largest object", decodeManifest(t, largestManifest("largest")))
}
