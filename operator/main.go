// Command operator reconciles MCPServer resources into a running enforcement proxy
// (`operator` or `operator run`), and checks manifests offline for GitOps pipelines
// (`operator validate -f PATH...`, `operator plan -f PATH...`). See docs/operator.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	// Go's own CA roots, used only where the system has none: the images carry no CA bundle.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/tollgate-dev/tollgate/internal/version"
	"github.com/tollgate-dev/tollgate/operator/admission"
	"github.com/tollgate-dev/tollgate/operator/manager"
	"github.com/tollgate-dev/tollgate/operator/manifest"
)

// defaultProxyImage is the proxy the operator deploys when an MCPServer names none: the proxy
// of the operator's own version, never a moving tag (an upgrade of the operator then rolls
// the proxies to the matching version; docs/install.md).
var defaultProxyImage = version.Image("proxy")

// paths collects repeated -f flags.
type paths []string

func (p *paths) String() string     { return fmt.Sprint(*p) }
func (p *paths) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "version" || args[0] == "-version" || args[0] == "--version") {
		fmt.Println("operator", version.String())
		return
	}
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "validate" || args[0] == "plan") {
		cmd, args = args[0], args[1:]
	}
	var code int
	switch cmd {
	case "validate":
		code = validate(args, os.Stdin, os.Stdout, os.Stderr)
	case "plan":
		code = plan(args, os.Stdin, os.Stdout, os.Stderr)
	default:
		code = run(args)
	}
	os.Exit(code)
}

// validate: exit 0 when every MCPServer is valid, 1 when one is not, 2 on usage errors and
// input that cannot be read (a missing file, YAML that does not split into documents, an
// empty standard input). "-f -" reads standard input: `kustomize build overlay | operator
// validate -f -`.
func validate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files paths
	fs.Var(&files, "f", "a manifest file or folder, or - for standard input (repeatable; multi-document YAML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files = append(files, fs.Args()...)
	if len(files) == 0 {
		fmt.Fprintln(stderr, "usage: operator validate -f PATH|- [-f PATH...]")
		return 2
	}
	docs, err := manifest.ReadFrom(files, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	v, err := admission.New()
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 2
	}
	probs, n := manifest.Validate(v, docs)
	for _, p := range probs {
		fmt.Fprintln(stdout, p)
	}
	if len(probs) > 0 {
		fmt.Fprintf(stderr, "%d problem(s) in %d MCPServer(s)\n", len(probs), n)
		return 1
	}
	fmt.Fprintf(stderr, "%d MCPServer(s) valid\n", n)
	return 0
}

func plan(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files paths
	fs.Var(&files, "f", "a manifest file or folder, or - for standard input (repeatable); ConfigMaps among them resolve references")
	image := fs.String("proxy-image", defaultProxyImage, "the proxy image for MCPServers that name none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files = append(files, fs.Args()...)
	if len(files) == 0 {
		fmt.Fprintln(stderr, "usage: operator plan -f PATH|- [-f PATH...]")
		return 2
	}
	docs, err := manifest.ReadFrom(files, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "plan:", err)
		return 2
	}
	v, err := admission.New()
	if err != nil {
		fmt.Fprintln(stderr, "plan:", err)
		return 2
	}
	if err := manifest.Plan(v, docs, *image, stdout); err != nil {
		fmt.Fprintln(stderr, "plan:", err)
		return 1
	}
	return 0
}

func run(args []string) int {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	var o manager.Options
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "address of /metrics")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader, so that only one replica reconciles; a stopping leader releases the lease at once")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader-election lease (default: the pod's own; required outside a cluster)")
	fs.StringVar(&o.ProxyImage, "proxy-image", defaultProxyImage, "the proxy image for MCPServers that name none")
	opts := zap.Options{}
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "no cluster to connect to")
		return 1
	}
	mgr, err := manager.New(ctx, cfg, o)
	if err != nil {
		log.Error(err, "setting up")
		return 1
	}
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager stopped")
		return 1
	}
	return 0
}
