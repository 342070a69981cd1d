// Package manifest is the operator's offline side for GitOps pipelines: `operator validate`
// gives the API server's verdict on MCPServer manifests (plus the operator's own checks)
// without a cluster, and `operator plan` prints the objects the operator would create.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/pathlist"
	"github.com/tollgate-dev/tollgate/operator/admission"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// Document is one YAML document of a file.
type Document struct {
	File  string
	Index int // 1-based position in the file
	Data  []byte
	Kind  string
	Group string
}

// Stdin is the path that names standard input, as in
// `kustomize build overlay | operator validate -f -`; problems name it StdinName.
const (
	Stdin     = "-"
	StdinName = "<stdin>"
)

// Read splits files, or every .yaml/.yml/.json file below folders, into documents; the path
// "-" (Stdin) reads standard input.
func Read(paths []string) ([]Document, error) { return ReadFrom(paths, os.Stdin) }

// ReadFrom is Read with stdin as what "-" names. Standard input can be read once, so "-" may
// be given once; and it must hold a document: an empty one is what a failed
// `kustomize build` sends down a pipe, and validating nothing must not pass.
func ReadFrom(paths []string, stdin io.Reader) ([]Document, error) {
	var docs []Document
	readStdin := false
	for _, p := range paths {
		if p == Stdin {
			if readStdin {
				return nil, errors.New(`"-" (standard input) given more than once`)
			}
			readStdin = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			d, err := split(StdinName, data)
			if err != nil {
				return nil, err
			}
			if len(d) == 0 {
				return nil, errors.New("standard input holds no YAML document (did the command before the pipe fail?)")
			}
			docs = append(docs, d...)
			continue
		}
		files, err := pathlist.Expand([]string{p}, ".yaml", ".yml", ".json")
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			d, err := split(f, data)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d...)
		}
	}
	return docs, nil
}

// split cuts a file's content, named name in problems, into its non-empty documents.
func split(name string, data []byte) ([]Document, error) {
	var docs []Document
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			i--
			continue
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		_ = yaml.Unmarshal(doc, &tm) // an undecodable document is the validator's to report
		group, _, _ := strings.Cut(tm.APIVersion, "/")
		if !strings.Contains(tm.APIVersion, "/") {
			group = ""
		}
		docs = append(docs, Document{File: name, Index: i, Data: doc, Kind: tm.Kind, Group: group})
	}
	return docs, nil
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func (d Document) isMCPServer() bool {
	return d.Kind == "MCPServer" && d.Group == v1alpha1.GroupVersion.Group
}

// Problem is one finding: where, which field, what.
type Problem struct {
	File    string
	Index   int
	Field   string
	Message string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Index, p.Field, p.Message)
}

// Validate checks every MCPServer document: the API server's admission (schema, list maps,
// CEL, in its order), then the operator's semantic checks on what admission accepted. Other
// documents are skipped. It returns the problems and how many MCPServers it checked.
func Validate(v *admission.Validator, docs []Document) ([]Problem, int) {
	var probs []Problem
	configMaps := configMapsOf(docs)
	n := 0
	for _, d := range docs {
		if !d.isMCPServer() {
			continue
		}
		n++
		obj, errs := v.AdmitYAML(d.Data)
		for _, e := range errs {
			probs = append(probs, problem(d, e))
		}
		if len(errs) > 0 {
			continue
		}
		var s v1alpha1.MCPServer
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &s); err != nil {
			probs = append(probs, Problem{d.File, d.Index, "<root>", err.Error()})
			continue
		}
		before := len(probs)
		semantic := func(field string, err error) {
			if err == nil {
				return
			}
			for _, msg := range strings.Split(err.Error(), "\n") {
				probs = append(probs, Problem{d.File, d.Index, field, msg})
			}
		}
		semantic("spec.rateLimiting", s.Spec.RateLimiting.Validate())
		// The schema and rules state these too; the Go checks are the proxy's own.
		semantic("spec.upstream", s.Spec.Upstream.Validate("spec.upstream"))
		if p := s.Spec.Proxy; p != nil {
			semantic("spec.proxy.http", p.HTTP.Validate("spec.proxy.http"))
		}
		// What the operator would render, when the references are among the manifests: the
		// proxy's own validation of the config (referenced ConfigMaps' values included) and
		// the object names, as the reconciler checks them.
		if in, err := inputs(&s, configMaps, "proxy"); err == nil && len(probs) == before {
			if _, err := render.Render(in); err != nil {
				semantic("<rendered>", err)
			}
		}
	}
	return probs, n
}

func problem(d Document, e *field.Error) Problem {
	f := e.Field
	if f == "" {
		f = "<root>"
	}
	msg := e.ErrorBody()
	return Problem{d.File, d.Index, f, msg}
}

// Plan renders the objects the operator would create for every MCPServer in docs, resolving
// references from ConfigMaps among docs (a reference to one that is absent is reported: the
// operator would set ReferencesResolved=False and create nothing). It writes YAML to w.
func Plan(v *admission.Validator, docs []Document, proxyImage string, w io.Writer) error {
	configMaps := configMapsOf(docs)
	var errs []error
	for _, d := range docs {
		if !d.isMCPServer() {
			continue
		}
		obj, ferrs := v.AdmitYAML(d.Data)
		if len(ferrs) > 0 {
			errs = append(errs, fmt.Errorf("%s:%d: invalid: %w", d.File, d.Index, ferrs.ToAggregate()))
			continue
		}
		var s v1alpha1.MCPServer
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &s); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", d.File, d.Index, err))
			continue
		}
		in, err := inputs(&s, configMaps, proxyImage)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s/%s: %w", d.File, d.Index, s.Namespace, s.Name, err))
			continue
		}
		objs, err := render.Render(in)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "# MCPServer %s/%s (%s:%d) → would create or update:\n", s.Namespace, s.Name, d.File, d.Index)
		list := []any{objs.ConfigMap, objs.Deployment, objs.Service}
		if objs.NetworkPolicy != nil {
			list = append(list, objs.NetworkPolicy)
		}
		for _, o := range list {
			b, err := yaml.Marshal(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "---\n%s", b)
		}
		if s.Spec.SessionStorage != nil && s.Spec.SessionStorage.UserHashKeyRef == nil {
			// Not printed: its content is random, made once on the cluster, and secret.
			fmt.Fprintf(w, "# and, once, Secret %s: a random 256-bit key for user pseudonyms (never changed by the operator)\n",
				render.UserHashKeySecretName(s.Name))
		}
	}
	return errors.Join(errs...)
}

// configMapsOf are the ConfigMaps among docs, by namespace/name.
func configMapsOf(docs []Document) map[string]*corev1.ConfigMap {
	configMaps := map[string]*corev1.ConfigMap{}
	for _, d := range docs {
		if d.Kind == "ConfigMap" && d.Group == "" {
			var cm corev1.ConfigMap
			if err := yaml.Unmarshal(d.Data, &cm); err == nil {
				ns := cm.Namespace
				if ns == "" {
					ns = admission.DefaultNamespace
				}
				configMaps[ns+"/"+cm.Name] = &cm
			}
		}
	}
	return configMaps
}

// inputs resolves an MCPServer's references from the ConfigMaps at hand, as the reconciler
// does on the API server (render.ResolveInputs). Secrets are only mounted by the proxy, so
// they need not be present.
func inputs(s *v1alpha1.MCPServer, cms map[string]*corev1.ConfigMap, image string) (render.Inputs, error) {
	in, err := render.ResolveInputs(s, image, func(name string) (map[string]string, bool, error) {
		cm, ok := cms[s.Namespace+"/"+name]
		if !ok {
			return nil, false, nil
		}
		return cm.Data, true, nil
	})
	var re *render.RefError
	if errors.As(err, &re) && re.Reason == v1alpha1.ReasonConfigMapNotFound {
		return in, ConfigMapNotFoundError{Namespace: s.Namespace, Name: re.Name}
	}
	return in, err
}

// ConfigMapNotFoundError is the error, wrapped in Plan's, of an MCPServer that references a
// ConfigMap (oidcConfigRef, externalAuthConfigRef) that is not among the manifests: in a
// cluster without it the operator would create nothing and report
// ReferencesResolved=False/ConfigMapNotFound.
type ConfigMapNotFoundError struct {
	Namespace, Name string
}

func (e ConfigMapNotFoundError) Error() string {
	return fmt.Sprintf("ConfigMap %q is not among the manifests: the operator would report ReferencesResolved=False/%s", e.Name, v1alpha1.ReasonConfigMapNotFound)
}
