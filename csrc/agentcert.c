/* Signing in with a certificate file whose private key is only in ssh-agent, as
 * OpenSSH pairs a CertificateFile with an agent key. A module function taking the
 * session rather than a Session method: pyssh/session.py (_Auth.agent_certificate)
 * is its one caller, after _auth_try_pubkey(cert=) found the certificate accepted.
 *
 * libssh 0.11 offers a certificate with the agent's key only with IdentitiesOnly,
 * and then asks the agent to sign with the certificate, which OpenSSH's agent does
 * not know when it holds only the key: pyssh's patch
 * (vendor/patches/libssh-0.11.5-agent-certificate.patch) adds
 * ssh_userauth_agent_key() and has the agent sign with the certified key. */
#include "pyssh.h"

#ifdef PYSSH_LIBSSH_AGENT_KEY

struct agent_cert_arg {
    const char *path;
    ssh_key cert;
};

static int
agent_cert_step(ssh_session ssh, void *p)
{
    struct agent_cert_arg *a = p;
    if (a->cert == NULL && ssh_pki_import_cert_file(a->path, &a->cert) != SSH_OK) {
        a->cert = NULL;
        return PYSSH_FAILED; /* AuthenticationError with libssh's words */
    }
    int rc = ssh_userauth_agent_key(ssh, NULL, a->cert);
    if (rc == SSH_AUTH_AGAIN) {
        return PYSSH_AGAIN;
    }
    return rc == SSH_AUTH_ERROR ? PYSSH_FAILED : rc;
}

PyDoc_STRVAR(auth_agent_certificate_doc,
             "_auth_agent_certificate(session, cert, /, timeout=None)\n--\n\n"
             "Sign in with the certificate file `cert`, the signature made by ssh-agent with\n"
             "the key it certifies. Returns an AUTH_* constant.");

static PyObject *
auth_agent_certificate(PyObject *module, PyObject *args, PyObject *kwds)
{
    (void)module;
    static char *kwlist[] = {"", "", "timeout", NULL};
    PyObject *session = NULL, *path = NULL;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO&|O&:_auth_agent_certificate", kwlist, &session,
                                     PyUnicode_FSConverter, &path, pyssh_total_deadline_conv,
                                     &dl)) {
        return NULL;
    }
    if (!pyssh_is_session(session)) {
        Py_DECREF(path);
        return PyErr_Format(PyExc_TypeError, "a Session is needed, not %.100s",
                            Py_TYPE(session)->tp_name);
    }
    SessionObject *self = (SessionObject *)session;
    if (pyssh_session_check(self, PYSSH_NEED_CONNECTED) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    struct agent_cert_arg a = {PyBytes_AS_STRING(path), NULL};
    int rc = pyssh_wait(self, agent_cert_step, &a, &dl, PYSSH_EXC_AuthenticationError,
                        "signing a certificate with ssh-agent");
    ssh_key_free(a.cert);
    Py_DECREF(path);
    if (rc < 0) {
        return NULL;
    }
    if (rc == SSH_AUTH_SUCCESS && self->ssh == NULL) {
        return pyssh_raise(self->state, PYSSH_EXC_SessionClosedError, "the session is closed");
    }
    return PyLong_FromLong(rc);
}

#endif /* PYSSH_LIBSSH_AGENT_KEY */

PyMethodDef pyssh_agentcert_methods[] = {
#ifdef PYSSH_LIBSSH_AGENT_KEY
    {"_auth_agent_certificate", (PyCFunction)(void (*)(void))auth_agent_certificate,
     METH_VARARGS | METH_KEYWORDS, auth_agent_certificate_doc},
#endif
    {NULL, NULL, 0, NULL},
};
