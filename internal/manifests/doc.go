// Package manifests loads the objects of a kustomize base under deploy/ so
// that tests can apply exactly what users apply. It reads the files listed
// in the kustomization's resources, and the kustomizations of listed
// folders (bases here have no patches).
package manifests
