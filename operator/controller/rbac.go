package controller

// The operator's RBAC: the single source of manifests/rbac/role.yaml (task generate). Every
// verb here is one the code uses; the integration tests run the manager under the generated
// role, impersonating the operator's ServiceAccount (envtest.AsOperator), and fail on any
// request the API server refuses.

// +kubebuilder:rbac:groups=tollgate.dev,resources=mcpservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=tollgate.dev,resources=mcpservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// The managed objects carry a controller reference to their MCPServer, and
// controllerutil.SetControllerReference sets blockOwnerDeletion: true on it. Where the
// OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift enables it), setting
// blockOwnerDeletion requires update on the owner's finalizers subresource, else every apply is
// refused ("cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't
// set finalizers on"). The operator sets no finalizer itself; this verb only lets it block
// the owner's foreground deletion. TestOwnerReferencesPermissionEnforcement checks it.
// +kubebuilder:rbac:groups=tollgate.dev,resources=mcpservers/finalizers,verbs=update

// Secrets: get, list and watch read metadata only (the cache and every read are
// metadata-only: manager.ClientOptions, resolve.go); create makes each MCPServer's user-hash
// key once (userHashKey). No update, patch or delete: the operator never changes a key (its
// Secret is immutable), and garbage collection deletes it with its MCPServer. get stays
// broader than needed, because RBAC cannot grant metadata-only reads; the code never reads
// a Secret's data.
//
// Leader election records its event ("<id> became leader", on the Lease) through client-go's
// core/v1 event recorder, not the events.k8s.io one the reconciler uses; a retried event is
// patched (its count), so create and patch. TestLeaderElectionEvents checks it.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
