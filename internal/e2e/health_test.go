package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// argoCDScript is the shipped health check, read from the repository as a user copies it
// into argocd-cm.
var argoCDScript = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(filepath.Join("..", "..", "manifests", "argocd-health.lua"))
	return string(b), err
})

// argoCDHealth runs the health check as Argo CD runs a resource customization
// (util/lua in argo-cd): a fresh gopher-lua state with the base, table, string and math
// libraries, the live object decoded from JSON into Lua tables as the global obj, and the
// script's returned table read as {status, message}.
func argoCDHealth(obj map[string]any) (status, message string, err error) {
	script, err := argoCDScript()
	if err != nil {
		return "", "", fmt.Errorf("reading manifests/argocd-health.lua: %w", err)
	}
	// Through JSON, as Argo CD holds the object: numbers are floats, lists are arrays.
	b, err := json.Marshal(obj)
	if err != nil {
		return "", "", err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", "", err
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", fmt.Errorf("opening the Lua library %q: %w", lib.name, err)
		}
	}
	L.SetGlobal("obj", toLua(L, v))
	if err := L.DoString(script); err != nil {
		return "", "", fmt.Errorf("manifests/argocd-health.lua: %w", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("manifests/argocd-health.lua returned %s, not a table", L.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message")), nil
}

// toLua converts decoded JSON into Lua values.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	}
	return lua.LNil
}

// healthOf reads what the admin and GitOps tools see of a live MCPServer; detail carries the
// messages, for failure reports.
func healthOf(u *unstructured.Unstructured) (h health, detail string, err error) {
	var s struct {
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
		Status struct {
			ObservedGeneration int64 `json:"observedGeneration"`
			Conditions         []struct {
				Type, Status, Reason, Message string
				ObservedGeneration            int64 `json:"observedGeneration"`
			} `json:"conditions"`
		} `json:"status"`
	}
	b, err := json.Marshal(u.Object)
	if err != nil {
		return h, "", err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return h, "", err
	}
	h.Current = s.Status.ObservedGeneration == s.Metadata.Generation
	h.Conditions = map[string]string{}
	for _, c := range s.Status.Conditions {
		h.Conditions[c.Type] = c.Status + "/" + c.Reason
		if c.ObservedGeneration != s.Metadata.Generation {
			h.Current = false
		}
		detail += fmt.Sprintf("\n  %s=%s/%s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	res, err := status.Compute(u)
	if err != nil {
		return h, "", fmt.Errorf("kstatus: %w", err)
	}
	h.Kstatus = res.Status.String()
	argo, msg, err := argoCDHealth(u.Object)
	if err != nil {
		return h, "", err
	}
	h.ArgoCD = argo
	detail += fmt.Sprintf("\n  kstatus %s: %s\n  Argo CD %s: %s", res.Status, res.Message, argo, msg)
	return h, detail, nil
}

// TestArgoCDHealthHarness checks the harness above on objects whose verdict the script's
// text settles, so that an e2e failure is never the harness's: every branch of the script.
func TestArgoCDHealthHarness(t *testing.T) {
	cond := func(typ, status, reason string) map[string]any {
		return map[string]any{"type": typ, "status": status, "reason": reason, "message": "m"}
	}
	obj := func(gen, observed int64, conds ...map[string]any) map[string]any {
		cs := make([]any, len(conds))
		for i, c := range conds {
			cs[i] = c
		}
		return map[string]any{
			"metadata": map[string]any{"generation": gen},
			"status":   map[string]any{"observedGeneration": observed, "conditions": cs},
		}
	}
	cases := map[string]struct {
		reason string
		obj    map[string]any
		want   string
	}{
		"NoStatus":     {"An object the operator has not seen is Progressing.", map[string]any{"metadata": map[string]any{"generation": int64(1)}}, "Progressing"},
		"OldStatus":    {"A status of an older generation says nothing of this spec.", obj(2, 1, cond("Ready", "True", "Ready")), "Progressing"},
		"Ready":        {"Ready at the current generation is Healthy.", obj(2, 2, cond("Ready", "True", "Ready")), "Healthy"},
		"NotReady":     {"Ready False, not stalled, is Progressing.", obj(1, 1, cond("Ready", "False", "SecretNotFound")), "Progressing"},
		"Stalled":      {"Stalled wins over Ready.", obj(1, 1, cond("Ready", "False", "PerUserRequiresAuth"), cond("Stalled", "True", "PerUserRequiresAuth")), "Degraded"},
		"ScaledToZero": {"Replicas 0 is Suspended.", obj(1, 1, cond("Ready", "False", "ProxyScaledToZero")), "Suspended"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, _, err := argoCDHealth(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nArgo CD health: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
