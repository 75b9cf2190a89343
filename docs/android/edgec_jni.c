/* JNI shim for one edgec model: the Kotlin class com.example.edgec.EdgecModel calls these.
 *
 * Build with the NDK (CMakeLists.txt beside this file), with
 *   -DEDGEC_MODEL=tiny            the --name the model was compiled with (includes tiny.h)
 *   -DEDGEC_EMBEDDED_WEIGHTS      if it was compiled with --embed-weights
 * and link libtiny.a (from edgec) and libedgec_runtime.a (the runtime for the same ABI). */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>

#include "edgec_runtime.h"

#ifndef EDGEC_MODEL
#error "define EDGEC_MODEL to the model's --name, e.g. -DEDGEC_MODEL=tiny"
#endif
#define EDGEC_STR_(x) #x
#define EDGEC_STR(x) EDGEC_STR_(x)
#define EDGEC_CAT_(a, b) a##b
#define EDGEC_CAT(a, b) EDGEC_CAT_(a, b)
#include EDGEC_STR(EDGEC_MODEL.h)
#define MODEL_INFO EDGEC_CAT(EDGEC_MODEL, _info)
#define MODEL_FORWARD EDGEC_CAT(EDGEC_MODEL, _forward)
#define MODEL_WEIGHTS EDGEC_CAT(EDGEC_MODEL, _weights)

static void throw_state(JNIEnv *env, const char *message) {
    jclass cls = (*env)->FindClass(env, "java/lang/IllegalStateException");
    if (cls != NULL) (*env)->ThrowNew(env, cls, message);
}

/* Opens a session; weightsPath is ignored (may be null) when the weights are embedded.
 * Returns the session handle, or 0 with an exception pending. */
JNIEXPORT jlong JNICALL Java_com_example_edgec_EdgecModel_nativeOpen(JNIEnv *env, jclass cls,
                                                                     jstring weightsPath,
                                                                     jint threads) {
    (void)cls;
    edgec_session *s = NULL;
    int32_t rc;
#ifdef EDGEC_EMBEDDED_WEIGHTS
    (void)weightsPath;
    rc = edgec_session_new_from_memory(&MODEL_INFO, MODEL_FORWARD, MODEL_WEIGHTS,
                                       MODEL_INFO.weights_size, (uint32_t)threads, &s);
#else
    if (weightsPath == NULL) {
        throw_state(env, "weightsPath is null");
        return 0;
    }
    const char *path = (*env)->GetStringUTFChars(env, weightsPath, NULL);
    if (path == NULL) return 0; /* OutOfMemoryError pending */
    rc = edgec_session_new(&MODEL_INFO, MODEL_FORWARD, path, (uint32_t)threads, &s);
    (*env)->ReleaseStringUTFChars(env, weightsPath, path);
#endif
    if (rc != EDGEC_RT_OK) {
        throw_state(env, edgec_last_error());
        return 0;
    }
    return (jlong)(intptr_t)s;
}

/* Greedy generation: prefill prompt, then up to maxNewTokens ids. */
JNIEXPORT jintArray JNICALL Java_com_example_edgec_EdgecModel_nativeGenerate(JNIEnv *env, jclass cls,
                                                                             jlong handle,
                                                                             jintArray prompt,
                                                                             jint maxNewTokens) {
    (void)cls;
    edgec_session *s = (edgec_session *)(intptr_t)handle;
    if (s == NULL || prompt == NULL || maxNewTokens < 0) {
        throw_state(env, "closed session, null prompt or negative maxNewTokens");
        return NULL;
    }
    jsize n = (*env)->GetArrayLength(env, prompt);
    jint *ids = (*env)->GetIntArrayElements(env, prompt, NULL);
    if (ids == NULL) return NULL;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(maxNewTokens > 0 ? maxNewTokens : 1));
    uint32_t got = 0;
    int32_t rc = out == NULL ? EDGEC_ERR_OUT_OF_MEMORY
                             : edgec_session_generate(s, (const int32_t *)ids, (uint32_t)n,
                                                      (uint32_t)maxNewTokens, NULL, out, &got, NULL);
    (*env)->ReleaseIntArrayElements(env, prompt, ids, JNI_ABORT);
    jintArray result = NULL;
    if (rc != EDGEC_RT_OK) {
        throw_state(env, out == NULL ? "out of memory" : edgec_session_last_error(s));
    } else {
        result = (*env)->NewIntArray(env, (jsize)got);
        if (result != NULL) (*env)->SetIntArrayRegion(env, result, 0, (jsize)got, (const jint *)out);
    }
    free(out);
    return result;
}

/* Forgets the conversation (position 0). */
JNIEXPORT void JNICALL Java_com_example_edgec_EdgecModel_nativeReset(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    edgec_session_reset((edgec_session *)(intptr_t)handle);
}

JNIEXPORT void JNICALL Java_com_example_edgec_EdgecModel_nativeClose(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    edgec_session_free((edgec_session *)(intptr_t)handle);
}
