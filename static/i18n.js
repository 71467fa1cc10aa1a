// French and English strings. The language comes from ?lang=, else the browser's.
const STRINGS = {
  en: {
    title: 'Visio', lobbyHeading: 'Join a meeting', room: 'Meeting name', name: 'Your name',
    join: 'Join', newMeeting: 'New meeting', inviteLink: 'Invite link', copyLink: 'Copy link',
    copied: 'Link copied', copyFailed: 'Select the link and copy it',
    camera: 'Camera', microphone: 'Microphone', speakerOut: 'Speaker', devices: 'Devices',
    micLevel: 'Microphone level', preview: 'Camera preview', previewOff: 'Your camera is off',
    blur: 'Blur background', blurOn: 'Background blurred', blurUnavailable: 'Background blur does not work in this browser.',
    blurFailed: 'Background blur could not start: {why}',
    tryAgain: 'Try again', defaultDevice: 'Default',
    // media errors: what happened, then how to fix it
    errDeniedCamera: 'The browser blocks your camera. To allow it, click the camera or padlock icon in the address bar, allow the camera, then choose Try again. You can join without video.',
    errDeniedMic: 'The browser blocks your microphone. To allow it, click the padlock icon in the address bar, allow the microphone, then choose Try again. Without it you can listen only.',
    errDeniedBoth: 'The browser blocks your camera and microphone. To allow them, click the camera or padlock icon in the address bar, allow both, then choose Try again.',
    errNotFoundCamera: 'No camera found. Plug one in and choose Try again, or join without video.',
    errNotFoundMic: 'No microphone found. Plug one in and choose Try again, or join to listen only.',
    errBusyCamera: 'Your camera is in use by another application or tab. Close it, then choose Try again.',
    errBusyMic: 'Your microphone is in use by another application. Close it, then choose Try again.',
    errInsecure: 'This page is not secure (no HTTPS), so the browser gives it no camera or microphone. Open it with an https:// address.',
    errUnsupported: 'This browser cannot use a camera or microphone here.',
    errOther: 'The {device} could not start ({why}).',
    audioOnly: 'You will join with your microphone only.',
    // room
    meeting: 'Meeting', controls: 'Meeting controls', stage: 'Participants\u2019 videos',
    mute: 'Mute', unmute: 'Unmute', stopVideo: 'Stop video', startVideo: 'Start video',
    share: 'Share screen', stopShare: 'Stop sharing', leave: 'Leave', more: 'More',
    layout: 'Layout', layoutGrid: 'Grid view', layoutSpeaker: 'Speaker view',
    chat: 'Chat', people: 'People', close: 'Close', send: 'Send', message: 'Message',
    unread: '{n} unread', participants: 'Participants', you: 'you', pin: 'Pin {name}',
    muted: 'muted', cameraOff: 'camera off', speaking: 'speaking', presenting: 'presenting',
    quality: 'Connection', good: 'good', fair: 'fair', poor: 'poor', lost: 'no media', unknown: 'measuring', offline: 'offline',
    reasonok: '{value} ms round trip', reasonloss: '{value} % packets lost', reasondelay: '{value} ms delay',
    reasonjitter: '{value} ms jitter', reasonframerate: 'low frame rate ({value} fps)',
    reasonbandwidth: 'bandwidth limits the video', reasoncpu: 'the computer is too busy to send full video',
    reasonnodata: 'nothing received', reasonmeasuring: 'measuring', reasonoutage: 'connection lost',
    reconnecting: 'Connection lost. Reconnecting\u2026', connecting: 'Connecting\u2026', reconnected: 'Reconnected',
    left: 'You left the meeting.', rejoin: 'Join again',
    screenOf: 'Screen of {name}', presentingBanner: 'You are presenting to everyone',
    alone: 'You are the only one here', aloneHint: 'Send the link to the people you want to meet.',
    joinedNote: '{name} joined', joinedManyNote: '{name} joined', and: 'and', andMore: 'and {n} more', leftNote: '{name} left', sharingNote: '{name} is presenting',
    mutedHint: 'You are muted. Unmute to speak (M).',
    replaced: 'You joined from another window.', error: 'Error',
    // meeting features (meeting.js)
    raiseHand: 'Raise hand', lowerHand: 'Lower hand', react: 'React', reactions: 'Reactions',
    r_thumbs_up: 'Thumbs up', r_clap: 'Applause', r_heart: 'Love', r_laugh: 'Laughter', r_surprised: 'Surprise', r_party: 'Celebration',
    reactedNote: '{name}: {reaction}', tooManyReactions: 'Too many reactions: wait a moment.',
    handRaisedNote: '{name} raised a hand', handFlag: 'hand raised, number {n}', raisedHands: 'Raised hands',
    muteAll: 'Mute everyone', allMutedNote: 'Everyone else is muted.', lockMeeting: 'Lock the meeting', locked: 'Locked',
    lockedNote: 'The meeting is locked: nobody new can join.', unlockedNote: 'The meeting is unlocked: others can join.',
    mutePerson: 'Mute {name}', stopVideoOf: 'Stop the video of {name}', stopShareOf: 'Stop the screen share of {name}',
    lowerHandOf: 'Lower hand of {name}', removePerson: 'Remove {name}', confirmRemove: 'Remove {name}?',
    hostMutedYou: 'A host muted your microphone. Unmute to speak.', hostStoppedCamera: 'A host stopped your camera.',
    hostStoppedShare: 'A host stopped your screen share.', hostLoweredHand: 'A host lowered your hand.',
    removedByHost: 'A host removed you from the meeting.',
    roomLocked: 'This meeting is locked. A host can unlock it to let you in.', scHand: 'Raise or lower your hand',
    mediaFailed: 'Your browser could not set up the media of this meeting. Join again, or try another browser.',
    more_others: '+{n}', moreOthers: '{n} more participants',
    sending: 'Sending\u2026', waiting: 'Waiting for the connection\u2026', notSent: 'Not sent.', retry: 'Retry',
    settings: 'Settings', fullscreen: 'Full screen', exitFullscreen: 'Exit full screen',
    shortcuts: 'Keyboard shortcuts', singleKeys: 'Single-key shortcuts (M, V, \u2026)',
    scMic: 'Mute or unmute', scCam: 'Stop or start video', scShare: 'Share screen or stop sharing',
    scChat: 'Open or close the chat', scPeople: 'Open or close the participant list',
    scLayout: 'Switch between grid and speaker view', scFullscreen: 'Full screen',
    scBlur: 'Blur background on or off', scHelp: 'Show these shortcuts', scEscape: 'Close a panel or dialog',
    cameraLost: 'Your camera was disconnected.', micLost: 'Your microphone was disconnected; using {name}.',
    participantCount: '{n} in the meeting', noShare: 'Screen sharing is not available on this device.',
    speakerUnsupported: 'This browser always plays sound on the default speaker.',
    // recording (recording.js)
    recording: 'Recording', record: 'Record', stopRecording: 'Stop recording',
    recordingStartedBy: 'Recording started by {name}', recordingStartedAdmin: 'Recording started by an administrator',
    recordingOngoing: 'This meeting is being recorded', recordingStopped: 'Recording stopped',
    recordingStoppedBy: 'Recording stopped by {name}', recordingFailed: 'Recording stopped: {why}',
    recordingError: 'Recording could not be changed:',
    // transcription and captions (captions.js)
    captions: 'Captions', transcriptionOn: 'Transcription on', startTranscription: 'Start transcription',
    stopTranscription: 'Stop transcription', downloadNotes: 'Download meeting notes',
    transcriptionStarted: 'Transcription started', transcriptionStartedBy: '{name} started transcription',
    transcriptionStopped: 'Transcription stopped', transcriptionStoppedBy: '{name} stopped transcription',
    transcriptionFailed: 'Transcription could not be changed:', noTranscript: 'No meeting notes:',
    speechLanguage: 'Language I speak (captions)', speechRoom: 'The meeting\u2019s language', speechFr: 'Français', speechEn: 'English',
  },
  fr: {
    title: 'Visio', lobbyHeading: 'Rejoindre une réunion', room: 'Nom de la réunion', name: 'Votre nom',
    join: 'Rejoindre', newMeeting: 'Nouvelle réunion', inviteLink: "Lien d'invitation", copyLink: 'Copier le lien',
    copied: 'Lien copié', copyFailed: 'Sélectionnez le lien et copiez-le',
    camera: 'Caméra', microphone: 'Micro', speakerOut: 'Haut-parleur', devices: 'Périphériques',
    micLevel: 'Niveau du micro', preview: 'Aperçu de la caméra', previewOff: 'Votre caméra est coupée',
    blur: "Flouter l'arrière-plan", blurOn: 'Arrière-plan flouté', blurUnavailable: "Le flou d'arrière-plan ne fonctionne pas dans ce navigateur.",
    blurFailed: "Le flou d'arrière-plan n'a pas pu démarrer : {why}",
    tryAgain: 'Réessayer', defaultDevice: 'Par défaut',
    errDeniedCamera: "Le navigateur bloque votre caméra. Pour l'autoriser, cliquez sur l'icône de caméra ou de cadenas dans la barre d'adresse, autorisez la caméra, puis choisissez Réessayer. Vous pouvez rejoindre sans vidéo.",
    errDeniedMic: "Le navigateur bloque votre micro. Pour l'autoriser, cliquez sur l'icône de cadenas dans la barre d'adresse, autorisez le micro, puis choisissez Réessayer. Sans micro, vous pouvez seulement écouter.",
    errDeniedBoth: "Le navigateur bloque votre caméra et votre micro. Pour les autoriser, cliquez sur l'icône de caméra ou de cadenas dans la barre d'adresse, autorisez-les, puis choisissez Réessayer.",
    errNotFoundCamera: 'Aucune caméra trouvée. Branchez-en une et choisissez Réessayer, ou rejoignez sans vidéo.',
    errNotFoundMic: 'Aucun micro trouvé. Branchez-en un et choisissez Réessayer, ou rejoignez pour écouter seulement.',
    errBusyCamera: 'Votre caméra est utilisée par une autre application ou un autre onglet. Fermez-la, puis choisissez Réessayer.',
    errBusyMic: 'Votre micro est utilisé par une autre application. Fermez-la, puis choisissez Réessayer.',
    errInsecure: "Cette page n'est pas sécurisée (pas de HTTPS) : le navigateur ne lui donne ni caméra ni micro. Ouvrez-la avec une adresse https://.",
    errUnsupported: 'Ce navigateur ne peut pas utiliser de caméra ni de micro ici.',
    errOther: "Impossible de démarrer : {device} ({why}).",
    audioOnly: 'Vous rejoindrez avec votre micro seulement.',
    meeting: 'Réunion', controls: 'Commandes de la réunion', stage: 'Vidéos des participants',
    mute: 'Couper le micro', unmute: 'Activer le micro', stopVideo: 'Couper la vidéo', startVideo: 'Activer la vidéo',
    share: "Partager l'écran", stopShare: 'Arrêter le partage', leave: 'Quitter', more: 'Plus',
    layout: 'Disposition', layoutGrid: 'Vue mosaïque', layoutSpeaker: 'Vue intervenant',
    chat: 'Discussion', people: 'Participants', close: 'Fermer', send: 'Envoyer', message: 'Message',
    unread: '{n} non lus', participants: 'Participants', you: 'vous', pin: 'Épingler {name}',
    muted: 'micro coupé', cameraOff: 'caméra coupée', speaking: 'parle', presenting: 'présente',
    quality: 'Connexion', good: 'bonne', fair: 'moyenne', poor: 'mauvaise', lost: 'aucun média', unknown: 'mesure en cours', offline: 'hors ligne',
    reasonok: '{value} ms aller-retour', reasonloss: '{value} % de paquets perdus', reasondelay: '{value} ms de délai',
    reasonjitter: '{value} ms de gigue', reasonframerate: "peu d'images par seconde ({value})",
    reasonbandwidth: 'le débit limite la vidéo', reasoncpu: "l'ordinateur est trop occupé pour envoyer toute la vidéo",
    reasonnodata: 'rien ne parvient', reasonmeasuring: 'mesure en cours', reasonoutage: 'connexion perdue',
    reconnecting: 'Connexion perdue. Reconnexion\u2026', connecting: 'Connexion\u2026', reconnected: 'Reconnecté',
    left: 'Vous avez quitté la réunion.', rejoin: 'Rejoindre à nouveau',
    screenOf: 'Écran de {name}', presentingBanner: 'Vous présentez à tout le monde',
    alone: "Personne d'autre n'est là pour l'instant", aloneHint: 'Envoyez le lien aux personnes que vous voulez retrouver.',
    joinedNote: '{name} a rejoint la réunion', joinedManyNote: '{name} ont rejoint la réunion', and: 'et', andMore: 'et {n} autres', leftNote: '{name} a quitté la réunion', sharingNote: '{name} présente',
    mutedHint: 'Votre micro est coupé. Activez-le pour parler (M).',
    replaced: 'Vous avez rejoint depuis une autre fenêtre.', error: 'Erreur',
    raiseHand: 'Lever la main', lowerHand: 'Baisser la main', react: 'Réagir', reactions: 'Réactions',
    r_thumbs_up: 'Pouce levé', r_clap: 'Applaudissements', r_heart: 'Cœur', r_laugh: 'Rire', r_surprised: 'Surprise', r_party: 'Fête',
    reactedNote: '{name} : {reaction}', tooManyReactions: 'Trop de réactions : patientez un instant.',
    handRaisedNote: '{name} lève la main', handFlag: 'main levée, numéro {n}', raisedHands: 'Mains levées',
    muteAll: 'Couper tous les micros', allMutedNote: 'Tous les autres micros sont coupés.', lockMeeting: 'Verrouiller la réunion', locked: 'Verrouillée',
    lockedNote: "La réunion est verrouillée : personne d'autre ne peut la rejoindre.", unlockedNote: "La réunion est déverrouillée : d'autres peuvent la rejoindre.",
    mutePerson: 'Couper le micro de {name}', stopVideoOf: 'Couper la vidéo de {name}', stopShareOf: "Arrêter le partage d'écran de {name}",
    lowerHandOf: 'Baisser la main de {name}', removePerson: 'Retirer {name} de la réunion', confirmRemove: 'Retirer {name} ?',
    hostMutedYou: 'Votre micro a été coupé à distance. Activez-le pour parler.', hostStoppedCamera: 'Votre caméra a été coupée à distance.',
    hostStoppedShare: "Votre partage d'écran a été arrêté à distance.", hostLoweredHand: 'Votre main a été baissée à distance.',
    removedByHost: 'La personne qui anime la réunion a mis fin à votre participation.',
    roomLocked: "Cette réunion est verrouillée. La personne qui l'anime peut la déverrouiller pour vous laisser entrer.",
    scHand: 'Lever ou baisser la main',
    mediaFailed: "Votre navigateur n'a pas pu établir les médias de cette réunion. Rejoignez-la à nouveau ou essayez un autre navigateur.",
    more_others: '+{n}', moreOthers: '{n} autres participants',
    sending: 'Envoi\u2026', waiting: 'En attente de la connexion\u2026', notSent: 'Non envoyé.', retry: 'Réessayer',
    settings: 'Paramètres', fullscreen: 'Plein écran', exitFullscreen: 'Quitter le plein écran',
    shortcuts: 'Raccourcis clavier', singleKeys: 'Raccourcis à une touche (M, V, \u2026)',
    scMic: 'Couper ou activer le micro', scCam: 'Couper ou activer la vidéo', scShare: "Partager l'écran ou arrêter",
    scChat: 'Ouvrir ou fermer la discussion', scPeople: 'Ouvrir ou fermer la liste des participants',
    scLayout: 'Passer de la mosaïque à la vue intervenant', scFullscreen: 'Plein écran',
    scBlur: "Flou d'arrière-plan", scHelp: 'Afficher ces raccourcis', scEscape: 'Fermer un panneau ou une fenêtre',
    cameraLost: 'Votre caméra a été débranchée.', micLost: 'Votre micro a été débranché ; micro utilisé : {name}.',
    participantCount: '{n} dans la réunion', noShare: "Le partage d'écran n'est pas disponible sur cet appareil.",
    speakerUnsupported: 'Ce navigateur joue toujours le son sur le haut-parleur par défaut.',
    recording: 'Enregistrement en cours', record: 'Enregistrer', stopRecording: "Arrêter l'enregistrement",
    recordingStartedBy: 'Enregistrement démarré par {name}', recordingStartedAdmin: "Enregistrement démarré par l'administration",
    recordingOngoing: 'Cette réunion est enregistrée', recordingStopped: 'Enregistrement arrêté',
    recordingStoppedBy: 'Enregistrement arrêté par {name}', recordingFailed: "L'enregistrement s'est arrêté : {why}",
    recordingError: "L'enregistrement n'a pas pu être modifié :",
    captions: 'Sous-titres', transcriptionOn: 'Transcription en cours', startTranscription: 'Démarrer la transcription',
    stopTranscription: 'Arrêter la transcription', downloadNotes: 'Télécharger le compte rendu',
    transcriptionStarted: 'La transcription a démarré', transcriptionStartedBy: '{name} a démarré la transcription',
    transcriptionStopped: 'La transcription est arrêtée', transcriptionStoppedBy: '{name} a arrêté la transcription',
    transcriptionFailed: "La transcription n'a pas pu être modifiée :", noTranscript: 'Pas de compte rendu :',
    speechLanguage: 'Langue que je parle (sous-titres)', speechRoom: 'Celle de la réunion', speechFr: 'Français', speechEn: 'English',
  },
};

export function pickLanguage(search = location.search, navLang = navigator.language || 'en') {
  const asked = new URLSearchParams(search).get('lang');
  if (asked && STRINGS[asked]) return asked;
  return navLang.toLowerCase().startsWith('fr') ? 'fr' : 'en';
}

export const lang = pickLanguage();

export function t(key, vars = {}) {
  let text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, v);
  return text;
}

// Fill every [data-i18n] element's text, [data-i18n-label] element's aria-label and
// [data-i18n-title] element's title.
export function translate(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
  }
}
