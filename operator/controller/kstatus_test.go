package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// TestKstatus: what GitOps tools compute from the status the reconciler writes (kstatus,
// which Flux uses): Current only when Ready, Failed when Stalled, InProgress otherwise.
func TestKstatus(t *testing.T) {
	perUser := &v1alpha1.RateLimitBucket{MaxTokens: 1, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	cases := map[string]struct {
		reason    string
		server    *v1alpha1.MCPServer
		available bool
		want      status.Status
	}{
		"Healthy": {"A Ready server is Current.", mcpServer(nil), true, status.CurrentStatus},
		"Rolling": {"A proxy not yet available is InProgress.", mcpServer(nil), false, status.InProgressStatus},
		"MissingSecret": {"A missing Secret is InProgress: it may yet appear.", mcpServer(func(s *v1alpha1.MCPServerSpec) {
			s.SessionStorage.PasswordRef = &v1alpha1.SecretKeyReference{Name: "absent", Key: "password"}
		}), true, status.InProgressStatus},
		"PerUserWithoutAuth": {"A config that cannot be enforced as written is Failed (Stalled), not InProgress forever.", mcpServer(func(s *v1alpha1.MCPServerSpec) {
			s.RateLimiting.PerUser = perUser
		}), true, status.FailedStatus},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tc.server)
			s := h.reconcile(t)
			if tc.available {
				if tc.server.Spec.SessionStorage.PasswordRef == nil {
					h.makeAvailable(t)
				}
				s = h.reconcile(t)
			}
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
			if err != nil {
				t.Fatal(err)
			}
			res, err := status.Compute(&unstructured.Unstructured{Object: obj})
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			if res.Status != tc.want {
				t.Errorf("%s\nkstatus: want %s, got %s (%s)", tc.reason, tc.want, res.Status, res.Message)
			}
		})
	}
}
