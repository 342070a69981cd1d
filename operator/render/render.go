// Package render turns an MCPServer and what its references resolved to into the objects
// the operator manages: the ProxyConfig ConfigMap, the proxy Deployment, its Service and, for
// proxies that trust an identity header, a NetworkPolicy. It is pure: same inputs, same
// objects, no API calls, so `operator plan` and the reconciler print and apply the very same
// thing.
package render

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Ports and paths of the proxy container.
const (
	MCPPort     = 8080
	MetricsPort = 9090
	ConfigKey   = "proxy.yaml"
	configDir   = "/etc/tollgate"
	redisDir    = "/var/run/tollgate/redis"
	redisTLSDir = "/var/run/tollgate/redis-tls"
	userHashDir = "/var/run/tollgate/userhash"
	// UserHashKeyFile is where the proxy reads its user-hash key (ProxyConfig
	// sessionStorage.userHashKeyFile): the mounted key of the managed or referenced Secret.
	UserHashKeyFile = userHashDir + "/key"
	// UserHashKeySecretKey is the data key of the Secret the operator creates for the key.
	UserHashKeySecretKey = "userHashKey"
	// UserHashKeyAnnotation on the pod template is the UID of the key's Secret: a Secret
	// deleted and created again (a new key: the operator makes a new one when its own is
	// gone) rolls every replica onto it together, instead of leaving running pods on the old
	// key and new pods on the new one. An edit of the key in place does not change it (the
	// operator never reads a Secret's content): roll the proxy by hand (docs/privacy.md).
	UserHashKeyAnnotation = "tollgate.dev/user-hash-key"
	// ConfigHashAnnotation on the pod template rolls the pods when a setting that needs a
	// restart changes. Rate limits are not in it: the proxy reloads them in place, and a
	// pod roll would cut every open SSE stream.
	ConfigHashAnnotation = "tollgate.dev/config-hash"
	// GatewayLabel marks the pods a header-trusting proxy accepts traffic from, when the
	// external auth ConfigMap names no gateway selector.
	GatewayLabel = "tollgate.dev/gateway"
	// FieldManager is the operator's server-side apply identity, and the value of
	// ManagedByLabel on every object it manages (the operator's cache selects them by it).
	FieldManager = "tollgate-operator"
	// ManagedByLabel marks the objects the operator manages.
	ManagedByLabel = "app.kubernetes.io/managed-by"
)

// ExternalAuth is the resolved externalAuthConfigRef ConfigMap.
type ExternalAuth struct {
	// UserHeader (key userHeader) names the identity header.
	UserHeader string
	// TrustedProxies (key trustedProxies, comma-separated CIDRs) limit where the header is
	// accepted from, in the proxy and in the NetworkPolicy.
	TrustedProxies []string
	// GatewayPodSelector and GatewayNamespaceSelector (label selectors) name the gateway
	// the NetworkPolicy admits; unset: pods labelled tollgate.dev/gateway=true in the
	// MCPServer's namespace.
	GatewayPodSelector       *metav1.LabelSelector
	GatewayNamespaceSelector *metav1.LabelSelector
}

// Inputs are an MCPServer with its references resolved.
type Inputs struct {
	Server *v1alpha1.MCPServer
	// OIDC is spec.oidcConfig, or the oidcConfigRef ConfigMap's keys.
	OIDC *v1alpha1.OIDCConfig
	// ExternalAuth is the externalAuthConfigRef ConfigMap's keys.
	ExternalAuth *ExternalAuth
	// ProxyImage is the image when spec.proxy.image is unset.
	ProxyImage string
	// UserHashKeyUID is the UID of the Secret holding the user-hash key (UserHashKeyRef),
	// stamped on the pod template (UserHashKeyAnnotation); "" (operator plan): not stamped.
	UserHashKeyUID string
}

// Objects are what the operator manages for one MCPServer.
type Objects struct {
	ConfigMap     *corev1.ConfigMap
	Deployment    *appsv1.Deployment
	Service       *corev1.Service
	NetworkPolicy *networkingv1.NetworkPolicy // nil unless the proxy trusts an identity header
}

// Name of the managed objects of an MCPServer.
func Name(server string) string { return server + "-proxy" }

// Labels of the managed objects and the proxy pods.
func Labels(server string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":     "tollgate-proxy",
		"app.kubernetes.io/instance": server,
		ManagedByLabel:               FieldManager,
	}
}

// UserHashKeySecretName names the Secret the operator creates for an MCPServer's user-hash
// key when spec.sessionStorage.userHashKeyRef is unset.
func UserHashKeySecretName(server string) string { return Name(server) + "-userhash" }

// UserHashKeyRef is the Secret key the proxy of s reads its user-hash key from:
// spec.sessionStorage.userHashKeyRef, else the operator's own Secret. nil without
// sessionStorage (no buckets, so no pseudonyms to key).
func UserHashKeyRef(s *v1alpha1.MCPServer) *v1alpha1.SecretKeyReference {
	ss := s.Spec.SessionStorage
	switch {
	case ss == nil:
		return nil
	case ss.UserHashKeyRef != nil:
		return ss.UserHashKeyRef.DeepCopy()
	}
	return &v1alpha1.SecretKeyReference{Name: UserHashKeySecretName(s.Name), Key: UserHashKeySecretKey}
}

// UserHashKeyBytes is the length of the random key the operator generates: 256 bits.
const UserHashKeyBytes = 32

// UserHashKeySecret is the Secret the operator creates once for s, holding key (hex-encoded:
// the text is the key the proxy reads, so no byte of it is a newline the proxy would trim).
// Immutable: the key is never edited in place, where running replicas would keep the old one
// and new ones read the new (to rotate, delete the Secret: docs/privacy.md). The owner
// reference is the caller's.
func UserHashKeySecret(s *v1alpha1.MCPServer, key []byte) *corev1.Secret {
	yes := true
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: UserHashKeySecretName(s.Name), Namespace: s.Namespace, Labels: Labels(s.Name),
			Annotations: map[string]string{"tollgate.dev/purpose": "keys the user pseudonyms of the proxy (HMAC-SHA256 of user ids); deleting it rotates the key and starts every per-user bucket afresh"}},
		Type:      corev1.SecretTypeOpaque,
		Immutable: &yes,
		Data:      map[string][]byte{UserHashKeySecretKey: []byte(hex.EncodeToString(key))},
	}
}

// URL is where clients reach the MCP endpoint through the proxy, inside the cluster.
func URL(s *v1alpha1.MCPServer) string {
	path := "/"
	if u, err := url.Parse(s.Spec.Upstream.URL); err == nil && u.EscapedPath() != "" {
		path = u.EscapedPath()
	}
	return fmt.Sprintf("http://%s.%s.svc:%d%s", Name(s.Name), s.Namespace, MCPPort, path)
}

// InvalidError is a spec that cannot be put in force as written: rendered, it would give a
// proxy config the proxy refuses, or an object the API server refuses. Retrying does not help.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// Render builds the objects. Owner references are the caller's (it holds the scheme). The
// rendered ProxyConfig goes through the proxy's own validation (v1alpha1.ProxyConfig.Validate,
// what the proxy runs when it loads the file) and the object names through the API server's
// rules, so that the operator never deploys what would be refused: an *InvalidError says what.
func Render(in Inputs) (Objects, error) {
	s := in.Server
	if msgs := validation.IsDNS1035Label(Name(s.Name)); len(msgs) > 0 {
		return Objects{}, &InvalidError{fmt.Errorf("metadata.name %q: the proxy's Service would be named %q, which %s", s.Name, Name(s.Name), msgs[0])}
	}
	pc := ProxyConfig(in)
	check := pc.DeepCopy()
	check.Default()
	if err := check.Validate(); err != nil {
		return Objects{}, &InvalidError{fmt.Errorf("the proxy would refuse its config: %w", err)}
	}
	data, err := yaml.Marshal(pc)
	if err != nil {
		return Objects{}, fmt.Errorf("rendering ProxyConfig: %w", err)
	}
	hash, err := restartHash(pc)
	if err != nil {
		return Objects{}, err
	}
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: Name(s.Name), Namespace: s.Namespace, Labels: Labels(s.Name)}
	}
	objs := Objects{
		ConfigMap: &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: meta(),
			Data:       map[string]string{ConfigKey: string(data)},
		},
		Deployment: deployment(in, meta(), hash),
		Service: &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: meta(),
			Spec: corev1.ServiceSpec{
				Selector: Labels(s.Name),
				Ports: []corev1.ServicePort{
					{Name: "mcp", Port: MCPPort, TargetPort: intstr.FromString("mcp"), Protocol: corev1.ProtocolTCP},
					{Name: "metrics", Port: MetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
				},
			},
		},
	}
	if in.ExternalAuth != nil {
		objs.NetworkPolicy = networkPolicy(in, meta())
	}
	return objs, nil
}

// ProxyConfig is the proxy's config for an MCPServer: everything resolved, secrets as files.
func ProxyConfig(in Inputs) *v1alpha1.ProxyConfig {
	s := in.Server
	pc := &v1alpha1.ProxyConfig{
		TypeMeta:     metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.ProxyConfigKind},
		Server:       v1alpha1.ServerIdentity{Namespace: s.Namespace, Name: s.Name},
		Generation:   s.Generation,
		Upstream:     s.Spec.Upstream,
		RateLimiting: s.Spec.RateLimiting.DeepCopy(),
	}
	if p := s.Spec.Proxy; p != nil {
		pc.HTTP = p.HTTP.DeepCopy()
		pc.PublicURL = p.PublicURL
		pc.Responses = p.Responses.DeepCopy()
		if p.Replicas != nil && *p.Replicas > 1 {
			pc.Replicas = *p.Replicas // failurePolicy Local divides shared buckets by it
		}
	}
	switch {
	case in.OIDC != nil:
		pc.Auth.OIDC = in.OIDC.DeepCopy()
	case in.ExternalAuth != nil:
		pc.Auth.Header = &v1alpha1.HeaderAuth{Name: in.ExternalAuth.UserHeader, TrustedProxies: in.ExternalAuth.TrustedProxies}
	default:
		pc.Auth.Anonymous = &v1alpha1.AnonymousAuth{}
	}
	if ss := s.Spec.SessionStorage; ss != nil {
		p := &v1alpha1.ProxySessionStorage{
			Provider: ss.Provider, Address: ss.Address, Addresses: ss.Addresses,
			MasterName: ss.MasterName, DB: ss.DB, KeyPrefix: ss.KeyPrefix,
		}
		if ss.UsernameRef != nil {
			p.UsernameFile = redisDir + "/username"
		}
		if ss.PasswordRef != nil {
			p.PasswordFile = redisDir + "/password"
		}
		if t := ss.TLS; t != nil {
			p.TLS = &v1alpha1.ProxyRedisTLS{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
			if t.CACertRef != nil {
				p.TLS.CAFile = redisTLSDir + "/ca.crt"
			}
		}
		// Always a key the operator or the user manages, never the proxy's per-process one:
		// replicas must agree on pseudonyms, and a pseudonym must not be guessable.
		p.UserHashKeyFile = UserHashKeyFile
		pc.SessionStorage = p
	}
	return pc
}

// restartHash covers what the proxy cannot reload: identity, upstream, auth, store and its
// HTTP bounds (the proxy refuses to reload them: proxy/config.RestartNeeded).
func restartHash(pc *v1alpha1.ProxyConfig) (string, error) {
	parts := []any{pc.Server, pc.Upstream, pc.Auth, pc.SessionStorage}
	if pc.HTTP != nil || pc.PublicURL != "" {
		parts = append(parts, pc.HTTP, pc.PublicURL) // only when set: existing hashes, and pods, stay as they are
	}
	b, err := json.Marshal(parts)
	if err != nil {
		return "", fmt.Errorf("hashing config: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func deployment(in Inputs, meta metav1.ObjectMeta, hash string) *appsv1.Deployment {
	s := in.Server
	replicas := int32(1)
	image := in.ProxyImage
	var resources corev1.ResourceRequirements
	if p := s.Spec.Proxy; p != nil {
		if p.Replicas != nil {
			replicas = *p.Replicas
		}
		if p.Image != "" {
			image = p.Image
		}
		resources = *p.Resources.DeepCopy()
	}
	volumes := []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: Name(s.Name)},
	}}}}
	mounts := []corev1.VolumeMount{{Name: "config", MountPath: configDir, ReadOnly: true}}
	if ss := s.Spec.SessionStorage; ss != nil {
		// Secrets as mounted files, not env: the kubelet updates them in place, and the proxy
		// reads the password on every new connection, so a rotation needs no restart.
		var sources []corev1.VolumeProjection
		if ss.UsernameRef != nil {
			sources = append(sources, secretFile(ss.UsernameRef, "username"))
		}
		if ss.PasswordRef != nil {
			sources = append(sources, secretFile(ss.PasswordRef, "password"))
		}
		if len(sources) > 0 {
			volumes = append(volumes, corev1.Volume{Name: "redis-credentials", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}}})
			mounts = append(mounts, corev1.VolumeMount{Name: "redis-credentials", MountPath: redisDir, ReadOnly: true})
		}
		if ss.TLS != nil && ss.TLS.CACertRef != nil {
			volumes = append(volumes, corev1.Volume{Name: "redis-tls", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{secretFile(ss.TLS.CACertRef, "ca.crt")},
			}}})
			mounts = append(mounts, corev1.VolumeMount{Name: "redis-tls", MountPath: redisTLSDir, ReadOnly: true})
		}
	}
	annotations := map[string]string{ConfigHashAnnotation: hash}
	if ref := UserHashKeyRef(s); ref != nil {
		volumes = append(volumes, corev1.Volume{Name: "user-hash-key", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{secretFile(ref, "key")},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "user-hash-key", MountPath: userHashDir, ReadOnly: true})
		if in.UserHashKeyUID != "" {
			annotations[UserHashKeyAnnotation] = in.UserHashKeyUID
		}
	}
	// Every probe field is spelled out with the API server's defaults: the reconciler
	// compares desired with live field by field, and a zero int counts as a difference.
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("metrics"), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
		}
	}
	yes, no := true, false
	uid := int64(65532)
	// The memory store keeps the buckets inside the one pod: a rolling update would run two,
	// each with its own buckets, and double every limit while it lasts. Recreate stops the old
	// pod first (a short gap in service, never a gap in the limits).
	strategy := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: ptr(intstr.FromString("25%")), MaxSurge: ptr(intstr.FromString("25%")),
	}}
	if ss := s.Spec.SessionStorage; ss != nil && ss.Provider == v1alpha1.SessionStorageMemory {
		strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Strategy: strategy,
			Selector: &metav1.LabelSelector{MatchLabels: Labels(s.Name)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: Labels(s.Name), Annotations: annotations},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: &no,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					// Long enough for in-flight calls to finish: the proxy drains on SIGTERM.
					TerminationGracePeriodSeconds: ptr(int64(35)),
					Containers: []corev1.Container{{
						Name:  "proxy",
						Image: image,
						Args: []string{
							"--config=" + configDir + "/" + ConfigKey,
							"--listen=:" + strconv.Itoa(MCPPort),
							"--metrics-listen=:" + strconv.Itoa(MetricsPort),
						},
						Ports: []corev1.ContainerPort{
							{Name: "mcp", ContainerPort: MCPPort, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
						},
						LivenessProbe:  probe("/healthz"),
						ReadinessProbe: probe("/readyz"),
						Resources:      resources,
						VolumeMounts:   mounts,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							ReadOnlyRootFilesystem:   &yes,
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: volumes,
				},
			},
		},
	}
}

func secretFile(ref *v1alpha1.SecretKeyReference, path string) corev1.VolumeProjection {
	return corev1.VolumeProjection{Secret: &corev1.SecretProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name},
		Items:                []corev1.KeyToPath{{Key: ref.Key, Path: path}},
	}}
}

// networkPolicy lets only the authenticating gateway reach a proxy that trusts an identity
// header (anyone else could send the header), and anyone reach the metrics port.
func networkPolicy(in Inputs, meta metav1.ObjectMeta) *networkingv1.NetworkPolicy {
	ea := in.ExternalAuth
	var from []networkingv1.NetworkPolicyPeer
	for _, cidr := range ea.TrustedProxies {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}})
	}
	if ea.GatewayPodSelector != nil || ea.GatewayNamespaceSelector != nil || len(from) == 0 {
		pods := ea.GatewayPodSelector
		if pods == nil && ea.GatewayNamespaceSelector == nil {
			pods = &metav1.LabelSelector{MatchLabels: map[string]string{GatewayLabel: "true"}}
		}
		from = append(from, networkingv1.NetworkPolicyPeer{PodSelector: pods, NamespaceSelector: ea.GatewayNamespaceSelector})
	}
	tcp := corev1.ProtocolTCP
	mcp, metrics := intstr.FromInt32(MCPPort), intstr.FromInt32(MetricsPort)
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: meta,
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: Labels(in.Server.Name)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: from, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &mcp}}},
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &metrics}}},
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }
