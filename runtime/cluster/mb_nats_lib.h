/*
 * mb_nats_lib.h — nats.c (libnats) loaded when the first cluster of the
 * process starts, not when mbrun or mb.so is: libnats brings libssl and
 * libcrypto, whose loading cost every start of mbrun about 2 ms (benchmark
 * 10, start-up, 3.3 ms without it against 5.5 ms with it).
 *
 * The files of runtime/cluster include this after <nats/nats.h>: each
 * nats.c function they call is a macro for a pointer in mb_nats_api,
 * filled by mb_nats_load (dlopen of MB_NATS_SONAME, dlsym of each name,
 * typed from nats.h's own prototypes). A program that links libnats itself
 * (the baselines in bench/c) defines MB_NATS_DIRECT and calls it directly.
 * A function missing from MB_NATS_FUNCS fails to link in mbrun.
 */
#ifndef MB_NATS_LIB_H
#define MB_NATS_LIB_H

#include <stddef.h>
#include <nats/nats.h>

/* libnats's run-time file (Debian package libnats3.4) */
#define MB_NATS_SONAME "libnats.so.3.4"

#define MB_NATS_FUNCS(X) \
  X(jsConsumerConfig_Init) \
  X(jsConsumerInfo_Destroy) \
  X(jsCtx_Destroy) \
  X(jsOptions_Init) \
  X(jsStreamConfig_Init) \
  X(jsStreamInfo_Destroy) \
  X(js_AddConsumer) \
  X(js_AddStream) \
  X(js_UpdateConsumer) \
  X(js_UpdateStream) \
  X(natsConnection_Close) \
  X(natsConnection_Connect) \
  X(natsConnection_Destroy) \
  X(natsConnection_GetMaxPayload) \
  X(natsConnection_JetStream) \
  X(natsConnection_ProcessReadEvent) \
  X(natsConnection_ProcessWriteEvent) \
  X(natsConnection_Publish) \
  X(natsConnection_PublishMsg) \
  X(natsConnection_PublishRequest) \
  X(natsConnection_QueueSubscribeSync) \
  X(natsConnection_Subscribe) \
  X(natsConnection_SubscribeSync) \
  X(natsMsgHeader_Get) \
  X(natsMsgHeader_Set) \
  X(natsMsg_Create) \
  X(natsMsg_Destroy) \
  X(natsMsg_GetData) \
  X(natsMsg_GetDataLength) \
  X(natsMsg_GetReply) \
  X(natsMsg_GetSubject) \
  X(natsMsg_IsNoResponders) \
  X(natsOptions_Create) \
  X(natsOptions_Destroy) \
  X(natsOptions_LoadCATrustedCertificates) \
  X(natsOptions_LoadCertificatesChain) \
  X(natsOptions_SetClosedCB) \
  X(natsOptions_SetDisconnectedCB) \
  X(natsOptions_SetErrorHandler) \
  X(natsOptions_SetEventLoop) \
  X(natsOptions_SetMaxReconnect) \
  X(natsOptions_SetName) \
  X(natsOptions_SetReconnectWait) \
  X(natsOptions_SetReconnectedCB) \
  X(natsOptions_SetSecure) \
  X(natsOptions_SetSendAsap) \
  X(natsOptions_SetToken) \
  X(natsOptions_SetURL) \
  X(natsOptions_SetUserCredentialsFromFiles) \
  X(natsOptions_SetUserInfo) \
  X(natsStatus_GetText) \
  X(natsSubscription_Destroy) \
  X(natsSubscription_GetDropped) \
  X(natsSubscription_GetPending) \
  X(natsSubscription_NextMsg) \
  X(natsSubscription_SetOnCompleteCB) \
  X(natsSubscription_SetPendingLimits) \
  X(natsSubscription_Unsubscribe) \
  X(nats_CloseAndWait) \
  X(nats_GetLastError) \
  X(nats_Open)

/* Loads libnats once (thread-safe); 0, or -1 with err saying why. */
int mb_nats_load(char *err, size_t errlen);

#ifndef MB_NATS_DIRECT
#define MB_NATS_FIELD(f) __typeof__(f) *f;
struct mb_nats_api {
  MB_NATS_FUNCS(MB_NATS_FIELD)
};
#undef MB_NATS_FIELD
extern struct mb_nats_api mb_nats_api;

#ifndef MB_NATS_LIB_IMPL
#define jsConsumerConfig_Init (mb_nats_api.jsConsumerConfig_Init)
#define jsConsumerInfo_Destroy (mb_nats_api.jsConsumerInfo_Destroy)
#define jsCtx_Destroy (mb_nats_api.jsCtx_Destroy)
#define jsOptions_Init (mb_nats_api.jsOptions_Init)
#define jsStreamConfig_Init (mb_nats_api.jsStreamConfig_Init)
#define jsStreamInfo_Destroy (mb_nats_api.jsStreamInfo_Destroy)
#define js_AddConsumer (mb_nats_api.js_AddConsumer)
#define js_AddStream (mb_nats_api.js_AddStream)
#define js_UpdateConsumer (mb_nats_api.js_UpdateConsumer)
#define js_UpdateStream (mb_nats_api.js_UpdateStream)
#define natsConnection_Close (mb_nats_api.natsConnection_Close)
#define natsConnection_Connect (mb_nats_api.natsConnection_Connect)
#define natsConnection_Destroy (mb_nats_api.natsConnection_Destroy)
#define natsConnection_GetMaxPayload (mb_nats_api.natsConnection_GetMaxPayload)
#define natsConnection_JetStream (mb_nats_api.natsConnection_JetStream)
#define natsConnection_ProcessReadEvent (mb_nats_api.natsConnection_ProcessReadEvent)
#define natsConnection_ProcessWriteEvent (mb_nats_api.natsConnection_ProcessWriteEvent)
#define natsConnection_Publish (mb_nats_api.natsConnection_Publish)
#define natsConnection_PublishMsg (mb_nats_api.natsConnection_PublishMsg)
#define natsConnection_PublishRequest (mb_nats_api.natsConnection_PublishRequest)
#define natsConnection_QueueSubscribeSync (mb_nats_api.natsConnection_QueueSubscribeSync)
#define natsConnection_Subscribe (mb_nats_api.natsConnection_Subscribe)
#define natsConnection_SubscribeSync (mb_nats_api.natsConnection_SubscribeSync)
#define natsMsgHeader_Get (mb_nats_api.natsMsgHeader_Get)
#define natsMsgHeader_Set (mb_nats_api.natsMsgHeader_Set)
#define natsMsg_Create (mb_nats_api.natsMsg_Create)
#define natsMsg_Destroy (mb_nats_api.natsMsg_Destroy)
#define natsMsg_GetData (mb_nats_api.natsMsg_GetData)
#define natsMsg_GetDataLength (mb_nats_api.natsMsg_GetDataLength)
#define natsMsg_GetReply (mb_nats_api.natsMsg_GetReply)
#define natsMsg_GetSubject (mb_nats_api.natsMsg_GetSubject)
#define natsMsg_IsNoResponders (mb_nats_api.natsMsg_IsNoResponders)
#define natsOptions_Create (mb_nats_api.natsOptions_Create)
#define natsOptions_Destroy (mb_nats_api.natsOptions_Destroy)
#define natsOptions_LoadCATrustedCertificates (mb_nats_api.natsOptions_LoadCATrustedCertificates)
#define natsOptions_LoadCertificatesChain (mb_nats_api.natsOptions_LoadCertificatesChain)
#define natsOptions_SetClosedCB (mb_nats_api.natsOptions_SetClosedCB)
#define natsOptions_SetDisconnectedCB (mb_nats_api.natsOptions_SetDisconnectedCB)
#define natsOptions_SetErrorHandler (mb_nats_api.natsOptions_SetErrorHandler)
#define natsOptions_SetEventLoop (mb_nats_api.natsOptions_SetEventLoop)
#define natsOptions_SetMaxReconnect (mb_nats_api.natsOptions_SetMaxReconnect)
#define natsOptions_SetName (mb_nats_api.natsOptions_SetName)
#define natsOptions_SetReconnectWait (mb_nats_api.natsOptions_SetReconnectWait)
#define natsOptions_SetReconnectedCB (mb_nats_api.natsOptions_SetReconnectedCB)
#define natsOptions_SetSecure (mb_nats_api.natsOptions_SetSecure)
#define natsOptions_SetSendAsap (mb_nats_api.natsOptions_SetSendAsap)
#define natsOptions_SetToken (mb_nats_api.natsOptions_SetToken)
#define natsOptions_SetURL (mb_nats_api.natsOptions_SetURL)
#define natsOptions_SetUserCredentialsFromFiles (mb_nats_api.natsOptions_SetUserCredentialsFromFiles)
#define natsOptions_SetUserInfo (mb_nats_api.natsOptions_SetUserInfo)
#define natsStatus_GetText (mb_nats_api.natsStatus_GetText)
#define natsSubscription_Destroy (mb_nats_api.natsSubscription_Destroy)
#define natsSubscription_GetDropped (mb_nats_api.natsSubscription_GetDropped)
#define natsSubscription_GetPending (mb_nats_api.natsSubscription_GetPending)
#define natsSubscription_NextMsg (mb_nats_api.natsSubscription_NextMsg)
#define natsSubscription_SetOnCompleteCB (mb_nats_api.natsSubscription_SetOnCompleteCB)
#define natsSubscription_SetPendingLimits (mb_nats_api.natsSubscription_SetPendingLimits)
#define natsSubscription_Unsubscribe (mb_nats_api.natsSubscription_Unsubscribe)
#define nats_CloseAndWait (mb_nats_api.nats_CloseAndWait)
#define nats_GetLastError (mb_nats_api.nats_GetLastError)
#define nats_Open (mb_nats_api.nats_Open)
#endif
#endif

#endif
