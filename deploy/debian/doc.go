// Package debian is dmsync's Debian packaging: the control file template,
// the maintainer scripts and their helper (mirrors-live), built into a .deb
// by scripts/deb.sh (`make deb`). Its test builds the package, installs it
// into a scratch root with dpkg and runs the daemon from there.
package debian
