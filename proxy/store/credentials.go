package store

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// credentials say where the username and the password come from. A file, when set, wins
// over the static value (the URL's userinfo or the environment).
type credentials struct {
	usernameFile, passwordFile string
	username, password         string
}

// check reads each file once, so that a missing file fails Open rather than every
// connection.
func (c credentials) check() error {
	_, _, err := c.resolve()
	return err
}

// resolve returns the credentials for a new connection, reading the files now.
func (c credentials) resolve() (username, password string, err error) {
	username, password = c.username, c.password
	if c.usernameFile != "" {
		if username, err = readSecretFile(c.usernameFile); err != nil {
			return "", "", fmt.Errorf("sessionStorage.usernameFile: %w", err)
		}
	}
	if c.passwordFile != "" {
		if password, err = readSecretFile(c.passwordFile); err != nil {
			return "", "", fmt.Errorf("sessionStorage.passwordFile: %w", err)
		}
	}
	return username, password, nil
}

// options returns what go-redis needs: static values when no file is involved, else a
// provider that reads the files on every new connection.
func (c credentials) options() (username, password string, provider func(context.Context) (string, string, error)) {
	if c.usernameFile == "" && c.passwordFile == "" {
		return c.username, c.password, nil
	}
	return "", "", func(context.Context) (string, string, error) { return c.resolve() }
}

// readSecretFile reads a mounted secret, without one trailing newline.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		return t, nil
	}
	return strings.TrimSuffix(s, "\n"), nil
}
