package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// mount is a container volume mount materialised on the host.
type mount struct {
	containerPath string // where the container expects it (volumeMounts[].mountPath)
	hostDir       string // where the stand-in wrote it
	volume        corev1.Volume
	configMap     bool              // a ConfigMap volume: its text files get their paths rewritten
	written       map[string][]byte // the payload on disk, to write only what changed
}

// errWaiting is a volume whose source is missing: the kubelet keeps the pod in
// ContainerCreating and retries, and so does the stand-in.
type errWaiting struct{ msg string }

func (e *errWaiting) Error() string { return e.msg }

// payload reads what a volume holds now: file path (relative to the volume) → content.
// Supported sources: configMap, secret, projected (configMap and secret sources) and
// emptyDir; anything else is an error, so a test never runs a pod the stand-in only
// pretends to have set up.
func payload(ctx context.Context, c client.Client, ns string, v corev1.Volume) (map[string][]byte, error) {
	out := map[string][]byte{}
	switch {
	case v.ConfigMap != nil:
		return out, configMapFiles(ctx, c, ns, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, out)
	case v.Secret != nil:
		return out, secretFiles(ctx, c, ns, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, out)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			var err error
			switch {
			case s.ConfigMap != nil:
				err = configMapFiles(ctx, c, ns, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, out)
			case s.Secret != nil:
				err = secretFiles(ctx, c, ns, s.Secret.Name, s.Secret.Items, s.Secret.Optional, out)
			default:
				err = fmt.Errorf("volume %q: the node stand-in supports only configMap and secret projections", v.Name)
			}
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	case v.EmptyDir != nil:
		return out, nil
	}
	return nil, fmt.Errorf("volume %q: the node stand-in supports configMap, secret, projected and emptyDir volumes only", v.Name)
}

func configMapFiles(ctx context.Context, c client.Client, ns, name string, items []corev1.KeyToPath, optional *bool, out map[string][]byte) error {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			if optional != nil && *optional {
				return nil
			}
			return &errWaiting{fmt.Sprintf("configmap %q not found", name)}
		}
		return fmt.Errorf("reading configmap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return project("configmap", name, data, items, optional, out)
}

func secretFiles(ctx context.Context, c client.Client, ns, name string, items []corev1.KeyToPath, optional *bool, out map[string][]byte) error {
	var s corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			if optional != nil && *optional {
				return nil
			}
			return &errWaiting{fmt.Sprintf("secret %q not found", name)}
		}
		return fmt.Errorf("reading secret %q: %w", name, err)
	}
	return project("secret", name, s.Data, items, optional, out)
}

// project maps keys to files as the kubelet does: every key under its own name, or only the
// listed items under their paths (a listed key that is missing keeps the pod waiting unless
// the source is optional).
func project(kind, name string, data map[string][]byte, items []corev1.KeyToPath, optional *bool, out map[string][]byte) error {
	if len(items) == 0 {
		maps.Copy(out, data)
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return &errWaiting{fmt.Sprintf("%s %q has no key %q", kind, name, it.Key)}
		}
		out[it.Path] = v
	}
	return nil
}

// rewrite replaces every container mount path in s with the host folder it was materialised
// to: "/etc/tollgate/proxy.yaml" becomes "<pod dir>/volumes/config/proxy.yaml". Only whole
// path prefixes are replaced (the mount path followed by "/" or the end of a token), the
// longest mount path first, so that /var/run/x/redis never rewrites /var/run/x/redis-tls.
func rewrite(s string, mounts []*mount) string {
	sorted := slices.Clone(mounts)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i].containerPath) > len(sorted[j].containerPath) })
	for _, m := range sorted {
		s = strings.ReplaceAll(s, m.containerPath+"/", m.hostDir+"/")
		if s == m.containerPath {
			s = m.hostDir
		}
	}
	return s
}

// writeAtomic brings dir to hold exactly files, the way the kubelet's AtomicWriter updates
// ConfigMap and Secret volumes: the files live in a fresh hidden folder, "..data" is a
// symlink to it, and each visible name is a symlink into "..data". An update writes a new
// folder and renames a new "..data" symlink over the old one, so a reader sees the old
// payload or the new one, never a mix or a half-written file.
func writeAtomic(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	ts, err := os.MkdirTemp(dir, "..tmp_")
	if err != nil {
		return err
	}
	for p, content := range files {
		if !filepath.IsLocal(p) {
			return fmt.Errorf("volume path %q leaves the volume", p)
		}
		f := filepath.Join(ts, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f, content, 0o644); err != nil {
			return err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	// Visible names: the first component of each path, a symlink into ..data.
	visible := map[string]bool{}
	for p := range files {
		first, _, _ := strings.Cut(filepath.ToSlash(p), "/")
		visible[first] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") && !visible[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for name := range visible {
		link := filepath.Join(dir, name)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join("..data", name) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return err
		}
	}
	return nil
}

// sync writes the volume's current payload when it differs from what is on disk. The
// payload of a ConfigMap volume has its paths rewritten (rewrite): the stand-in has no mount
// namespace, so a config that names a file in another volume must name the host copy.
func (m *mount) sync(ctx context.Context, c client.Client, ns string, mounts []*mount) (changed bool, err error) {
	files, err := payload(ctx, c, ns, m.volume)
	if err != nil {
		return false, err
	}
	if m.configMap {
		for p, content := range files {
			files[p] = []byte(rewrite(string(content), mounts))
		}
	}
	if m.written != nil && equalFiles(m.written, files) {
		return false, nil
	}
	if err := writeAtomic(m.hostDir, files); err != nil {
		return false, fmt.Errorf("writing volume %q: %w", m.volume.Name, err)
	}
	m.written = files
	return true, nil
}

func equalFiles(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

// isWaiting reports whether err only means a volume source is not there yet.
func isWaiting(err error) bool {
	var w *errWaiting
	return errors.As(err, &w)
}
