// Package store is the proxy's connection to the limiter's store: a go-redis client (or an
// embedded single-replica store) that never retries a script, behind a circuit breaker.
// The limiter (proxy/ratelimit) runs one non-idempotent Lua script per decision through the
// Store's redis.Scripter methods; the proxy's readiness calls Ping.
//
// # Where the store is
//
// Open takes the proxy config's sessionStorage block and, optionally, a URL (the proxy's
// --redis flag). A non-empty URL replaces the block's provider, addresses, db and
// credentials; only its tls block is still read, for the CA, server name and
// insecureSkipVerify of a rediss URL.
//
//	redis://[user[:password]@]host[:port][/db]     standalone (go-redis ParseURL; port 6379 by default)
//	rediss://…                                      the same over TLS
//	redis+cluster://[user[:password]@]host:port[,host:port…][?addr=host:port…]
//	rediss+cluster://…                              Redis Cluster (go-redis ParseClusterURL): seed nodes
//	                                                as a comma list in the host part and/or repeated addr
//	                                                parameters (IPv6 literals only as [::1]:port in addr)
//	redis+sentinel://[user[:password]@]host:port[,host:port…]/masterName[/db][?addr=host:port…]
//	rediss+sentinel://…                             Sentinel: the hosts are Sentinels, the path names the
//	                                                master set (required) and optionally the db
//	memory://                                       the embedded store (see below)
//
// The URL's user and password are the data nodes' (never the Sentinels'). A URL takes no
// other query parameter: timeouts, pool size and the breaker come from Options, and retries
// are always off. Errors name the part of the URL at fault and never repeat its password.
//
// With the config block:
//
//	provider: memory                      the embedded store; every other field but keyPrefix must be unset
//	provider: redis, address              standalone
//	provider: redis, addresses            Redis Cluster (seed nodes); db must be 0
//	provider: redis, addresses+masterName Sentinel: addresses are the Sentinels
//
// # Credentials
//
// The username and the password are each taken from the first of:
//
//  1. with a URL, the URL's userinfo (when the URL has one, it gives both);
//     with the config, usernameFile / passwordFile;
//  2. the REDIS_USERNAME / REDIS_PASSWORD environment variables (read once, at Open);
//  3. none.
//
// Files are read through go-redis's CredentialsProviderContext each time a connection is
// made, with one trailing newline ("\n" or "\r\n") removed, so a rotated mounted Secret is
// used by the next new connection without a restart (connections already open stay
// authenticated, as Redis keeps them). Open reads each file once, to fail at startup on a
// missing one. The config has no password field: secrets are files. Sentinels are reached
// without credentials.
//
// # TLS
//
// rediss URLs, or a tls block with the config, use TLS 1.2 or later, the CA bundle of
// tls.caFile (read at Open; the system roots when unset), tls.serverName (when unset, the
// host dialled) and tls.insecureSkipVerify (tests only). With Sentinel they apply to the
// Sentinels and the master alike; on Cluster, to every node.
//
// # No retries, short timeouts
//
// Every client has MaxRetries -1, one dial attempt (DialerRetries 1), Options.Timeout as
// dial, read, write and pool timeout, and ContextTimeoutEnabled, so a decision never waits
// much longer than Timeout. A Cluster client keeps go-redis's redirects (MaxRedirects 3): a
// MOVED or ASK reply means the node did not run the script, so following it is not a retry.
// But go-redis's Cluster redirect loop also re-sends a command after a network error, a
// read timeout, LOADING or CLUSTERDOWN, when the script may already have run, whatever
// MaxRetries says. The store therefore marks every EVAL/EVALSHA (and their _RO forms) as not
// retryable (go-redis's Cmder.NoRetry), which leaves only MOVED and ASK to be followed.
// TestCluster/NoRetryAfterTimeout shows a timed-out script running once through the store,
// and four times through a Cluster client with MaxRetries -1 and go-redis's other defaults;
// TestCluster/RedirectsFollowed shows a script still following MOVED and ASK.
//
// # Circuit breaker
//
// The Scripter methods (Eval, EvalSha, EvalRO, EvalShaRO, ScriptExists, ScriptLoad) go
// through a circuit breaker. After Breaker.Failures consecutive failures (default 5) it
// opens: every call fails at once with an error that errors.Is ErrCircuitOpen, without
// network I/O. While it is open, a background PING every Breaker.ProbeEvery (default 500ms,
// bounded by Timeout) checks whether Redis answers again, and the first answer closes it. No
// caller's call is ever the probe (a half-open breaker's probe is a request that waits for
// the timeout once per period; gobreaker, used before, works that way): once the breaker is
// open no request waits for Redis, and Redis decides again within ProbeEvery of its return
// (hack/outagebench measures both).
//
// Failures: network errors, timeouts (context.DeadlineExceeded included), a pool timeout, a
// failed TLS handshake or an unreadable credentials file, and the replies that say Redis cannot
// serve now: LOADING, CLUSTERDOWN, MASTERDOWN, TRYAGAIN, BUSY, READONLY, NOREPLICAS, OOM,
// MISCONF, NOAUTH, WRONGPASS, "max number of clients" and "Protocol error: unauthenticated"
// (Redis 7's answer to a long command without AUTH). Every other reply is a success for the
// breaker, errors included (NOSCRIPT, which go-redis's Script.Run answers with EVAL;
// redis.Nil; a script error; CROSSSLOT): Redis answered. context.Canceled (the caller gave
// up) and calls on a closed Store count as neither. Ping does not go through the breaker:
// readiness sees Redis as it is.
//
// # The memory store
//
// memory:// (or provider memory) runs the limiter's script in process: a
// ratelimit.LocalStore, the Go port of tokenbucket.lua (same keys, values, TTLs and replies;
// TestLocalStoreMatchesScript compares it with the script on miniredis and on a real
// redis-server). It is for a single replica: buckets live in the process and die with it, and
// replicas would each have their own. The store is reached through the same Store methods: a
// go-redis client whose every command a hook answers in process, so it never dials and opens
// no port (the miniredis it replaced listened on loopback behind a random password). It is
// not pipelined, and its breaker never opens: the local store fails only once closed, which
// the breaker does not count, and it decides whatever the caller's context (a decision takes
// microseconds and never waits), so a caller's deadline is not a store failure.
//
// A key expires as in Redis, at its own absolute time to the ms, and an expired key reads as
// missing at once: expiry is exact, and the miniredis store's TTL compensation (its
// FastForward took the same time off every key) is gone. A sweeper only frees memory:
// decisions remove a few expired keys each, and every Options.MemorySweepInterval (default
// 5s) the sweeper removes all of them, so that an idle store shrinks too. The store holds
// at most ratelimit.DefaultLocalMaxKeys keys; past it a new key evicts the key that would be
// full the soonest (see ratelimit.LocalStore).
package store
