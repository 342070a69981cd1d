package app

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tollgate-dev/tollgate/proxy/config"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Pseudonym is `proxy pseudonym`: it prints the pseudonym under which the proxy keyed by
// --key-file stores and logs each user id (the same function and key reading as the proxy),
// or, with --server, the Redis SCAN pattern of that user's buckets, for an erasure request
// (docs/privacy.md). User ids come from the arguments or, when there are none, one per line
// from standard input (so that they stay out of the shell's history). It returns the exit
// code: 0, 1 when the key cannot be read, 2 for usage errors.
func Pseudonym(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pseudonym", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "the user-hash key file (the Secret's key: kubectl get secret NAME-proxy-userhash -o jsonpath='{.data.userHashKey}' | base64 -d)")
	server := fs.String("server", "", "NAMESPACE/NAME: print the Redis SCAN pattern of the user's keys on this server instead of the pseudonym")
	prefix := fs.String("key-prefix", "", "sessionStorage.keyPrefix (default tollgate), with --server")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: proxy pseudonym --key-file FILE [--server NAMESPACE/NAME [--key-prefix P]] [USER...]  (no USER: one per line on standard input)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *keyFile == "" {
		fs.Usage()
		return 2
	}
	var ns, name string
	if *server != "" {
		var ok bool
		if ns, name, ok = strings.Cut(*server, "/"); !ok || ns == "" || name == "" {
			fmt.Fprintf(stderr, "pseudonym: --server %q: want NAMESPACE/NAME\n", *server)
			return 2
		}
	}
	key, err := config.ReadUserHashKey(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "pseudonym:", err)
		return 1
	}
	hasher := ratelimit.NewUserHasher(key)
	emit := func(user string) {
		p := hasher.Hash(user)
		if *server != "" {
			p = ratelimit.UserKeyPattern(*prefix, ns, name, p)
		}
		fmt.Fprintln(stdout, p)
	}
	if users := fs.Args(); len(users) > 0 {
		for _, u := range users {
			emit(u)
		}
		return 0
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if u := strings.TrimRight(sc.Text(), "\r"); u != "" {
			emit(u)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(stderr, "pseudonym: reading standard input:", err)
		return 1
	}
	return 0
}
